// Package audit owns what the audit log says and how it is checked: the
// actor of an action, the action names, the event builder (which also says
// which notification an event triggers), and verification of the per-tenant
// hash chains and the signed checkpoint chain. The hash format itself lives
// with the writer, in package storage; this package never writes.
package audit
