// Package keys owns the token-signing keys' lifecycle: generate, seal under
// the key-encryption key, store, load into a claims.KeySet, and rotate
// (next → current → previous → retired) across replicas. It needs only
// storage and the root secret's KEK, so `actas keys rotate` runs without
// the HTTP server.
package keys
