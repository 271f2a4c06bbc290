// Package upstream verifies ID tokens of external OIDC issuers (the support
// IdP's engineer tokens, the customer IdPs' bearer tokens) with go-oidc,
// discovering each issuer lazily and refetching its JWKS on an unknown kid
// at most once per cooldown. It implements core.Verifier.
package upstream
