// Package oauth is the OAuth 2.0 / OIDC surface: discovery (RFC 8414, OIDC
// Discovery), JWKS (RFC 7517), the token endpoint (RFC 8693 exchange,
// RFC 6749 refresh), introspection (RFC 7662) and revocation (RFC 7009).
// It parses forms, authenticates clients (RFC 6749 §2.3.1), calls the core
// and answers in RFC 6749 §5.2 JSON; it makes no domain decision itself.
package oauth
