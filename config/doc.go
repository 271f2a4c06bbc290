// Package config owns the operator's configuration file, actas.yaml: its
// model, strict loading (unknown keys are errors naming key and line),
// ACTAS_ environment overrides, defaults and a pure Validate that reports
// every problem at once.
//
// It does not open databases, contact identity providers or read the policy
// file; it only says what the operator asked for.
package config
