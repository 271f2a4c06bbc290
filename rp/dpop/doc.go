// Package dpop implements OAuth 2.0 Demonstrating Proof of Possession
// (RFC 9449): making proofs (NewProof) and checking them (Verify), and the
// RFC 7638 key thumbprint that binds a token to a key (Thumbprint).
//
// It does not remember proofs: replay detection needs storage shared by
// every replica of a server, so Verify returns the proof's identifier and
// expiry and the caller records it (the broker in its database, the rp
// middleware in a bounded in-memory cache).
package dpop
