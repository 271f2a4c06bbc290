// Package api is the customer and admin JSON API under /api/v1: the
// support-access toggle, grants, the audit log and notification settings
// of a tenant, for bearer tokens of configured customer issuers. Handlers
// parse and render; every rule is the core's. Errors are
// {"error", "message"} with the status the core's refusal kind calls for.
package api
