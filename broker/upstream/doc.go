// Package upstream is actas as a relying party of external OIDC issuers.
// It verifies their ID tokens (the support IdP's engineer tokens, the
// customer IdPs' bearer tokens) with go-oidc, discovering each issuer
// lazily and refetching its JWKS on an unknown kid at most once per
// cooldown; it implements core.Verifier. And it signs people in there
// (SignIn): engineers for the OpenID Provider flow, customers for the
// self-service page, with the code flow, PKCE and a nonce (x/oauth2).
package upstream
