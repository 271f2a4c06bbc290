// Package authorize is actas as an OpenID Provider for products' web
// sign-in (flow 6): /authorize, the engineer's sign-in at the support IdP
// (actas a relying party there, with go-oidc and x/oauth2), the pages that
// offer the engineer's live grants or take a tenant and support code, the
// confirmation of whom the engineer will act as, and RP-Initiated Logout
// at /logout.
//
// It parses, renders and redirects; every rule is the core's: the
// redemption is token exchange's own, codes and sessions live in storage.
// The token endpoint's authorization_code grant is the oauth package's.
// It does not send back-channel logout tokens: storage queues them where a
// grant or session ends, and the notify package delivers them.
//
// It is built by hand on go-jose (through the core) rather than on
// zitadel/oidc's op package: that package wants to own /token, whose
// grants and errors DESIGN.md fixes, and its storage interfaces would
// duplicate actas's single end-of-grant path.
package authorize
