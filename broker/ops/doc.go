// Package ops is the operations surface: liveness (/healthz), readiness
// (/readyz: storage answers, keys loaded, not draining) and Prometheus
// metrics (/metrics).
package ops
