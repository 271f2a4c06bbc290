// Package secrets owns the root secret and everything derived from it:
// loading (environment, file, or a 0600 file created beside a SQLite
// database), HKDF-SHA256 derivation of one key per use, and the HMACs built
// on them (support codes, refresh tokens, page cursors). It stores nothing
// and knows no HTTP.
package secrets
