// Package httpx is the plumbing every HTTP surface shares: the middleware
// (request IDs, body limit, panic recovery, access log, metrics labelled by
// route template), a slog handler that puts the request ID on every log
// line, bounded body reading and strict JSON decoding. It holds no
// protocol and no domain rule.
package httpx
