// Package core is actas's domain: the support-access toggle, grants and
// their codes, redemption and refresh, the introspection decision,
// revocation, the one end-of-grant path, ticket status, notification
// settings, usage summaries, and the maintenance sweeps. It decides and
// persists; it knows no HTTP. Surfaces (broker/oauth, broker/api,
// broker/hooks) parse requests, call it, and render what it returns or the
// *Error it refuses with.
package core
