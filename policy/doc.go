// Package policy owns the security team's policy file, policy.yaml: its
// strict parsing (every problem with file:line:col), the immutable,
// normalised Policy value, CEL rule expressions compiled at load, and the
// decisions taken with it — may this user grant this, may this engineer
// redeem it, does an issued grant still fit.
//
// Decisions are pure functions of a Policy and their inputs: no storage, no
// clock of its own, no I/O. Watching and reloading the file belongs to the
// broker.
package policy
