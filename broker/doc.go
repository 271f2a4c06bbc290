// Package broker assembles actas: from an operator config, a policy, a
// store and the root secret's keys it builds the signing-key manager, the
// upstream verifiers, the domain core (broker/core), the notification
// worker and the HTTP surfaces (broker/oauth, broker/api, broker/hooks,
// broker/ops), and runs them: the HTTP server, the outbox, and the
// maintenance loop, all stopped by one context. It holds no rule of its own.
package broker
