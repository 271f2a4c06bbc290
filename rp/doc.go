// Package rp is the relying-party kit for products that accept actas access
// tokens. It is its own Go module so that a product importing it pulls in
// go-jose and nothing of the broker (no SQLite, pgx or CEL).
//
// Subpackages:
//
//   - dpop: RFC 9449 proofs, made by clients and checked by servers; the
//     broker and the engineer CLI use it too, so there is one implementation.
package rp
