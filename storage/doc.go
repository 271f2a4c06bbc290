// Package storage owns persistence: the Store interface the broker uses,
// the records it stores (tenants, grants, tokens, refresh tokens, failure
// counters, signing keys, audit events) and the errors every backend maps
// its own failures to. Implementations live in storage/sqlstore (SQLite and
// PostgreSQL); storage/storetest is the conformance suite both must pass.
//
// Storage holds only hashes of support codes and refresh tokens, and only
// sealed private keys; it never sees a plaintext secret.
package storage
