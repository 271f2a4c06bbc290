// Package signals turns stored security events (storage.Signal) into
// Security Event Tokens (RFC 8417) of the Shared Signals Framework 1.0:
// CAEP session-revoked and token-claims-change, and SSF verification. It
// builds and signs; delivering (push through the outbox, poll at /ssf) is
// notify's and the ssf surface's job.
package signals
