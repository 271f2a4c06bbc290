// Package claims owns the impersonation access token: its claim set
// (RFC 9068 access token with the RFC 8693 §4.1 act claim), signing keys and
// their at-rest encryption, signing, JWKS publication, and verification with
// an algorithm allow-list where every registered claim is required.
//
// It knows nothing of storage, HTTP or policy; callers hand it keys and
// claims.
package claims
