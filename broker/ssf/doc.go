// Package ssf is actas's Shared Signals Framework 1.0 transmitter surface:
// the transmitter configuration, stream management (create, read, update,
// replace, delete, status, verification) for products holding a bearer
// from client_credentials with scope ssf, and RFC 8936 poll delivery.
// Push delivery (RFC 8935) runs in the outbox (package notify); events
// are made where grants end (storage) and signed by package signals.
package ssf
