// Package broker is the actas service: it wires configuration, policy,
// signing keys, upstream identity providers and storage into the HTTP
// surface — OAuth endpoints (discovery, JWKS, RFC 8693 token exchange,
// RFC 7662 introspection, RFC 7009 revocation), the customer API and the
// operations endpoints.
//
// It owns request handling and the order of checks; decisions come from
// package policy, token bytes from package claims, persistence from
// package storage.
package broker
