package core

import (
	"errors"
	"fmt"
)

// Kind classifies a refusal so that each surface can answer in its
// protocol's own format.
type Kind uint8

// Kinds of refusal.
const (
	KindInvalid         Kind = iota + 1 // the request is malformed
	KindUnprocessable                   // well-formed, but not acceptable
	KindUnauthenticated                 // no valid credential
	KindForbidden                       // the caller may not do this
	KindNotFound                        // no such thing (for this caller)
	KindConflict                        // the state does not allow it
	KindDenied                          // the policy refused; Rule names the rule
	KindCode                            // a support code did not redeem (one answer for every cause)
	KindLocked                          // too many failed redemptions
	KindScope                           // a requested scope is not granted
	KindTarget                          // an audience that is not a registered product
	KindGrant                           // a refresh token that is invalid, used, expired or revoked
	KindClient                          // the token was not issued to this client
	KindProof                           // a DPoP proof is missing, invalid, replayed or for another key
	KindUnavailable                     // storage or an identity provider cannot answer now
)

// Error is a refusal. Message is safe to show to the caller; the cause,
// if any, is for the log only.
type Error struct {
	Kind    Kind
	Code    string // the customer API's error code, when not the kind's default
	Message string
	Rule    string // KindDenied: the policy rule that refused
	cause   error
}

func (e *Error) Error() string {
	if e.cause != nil {
		return e.Message + ": " + e.cause.Error()
	}
	return e.Message
}

// Unwrap returns the cause, for logs and errors.Is.
func (e *Error) Unwrap() error { return e.cause }

func fail(k Kind, msg string) *Error { return &Error{Kind: k, Message: msg} }

func failf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

func coded(k Kind, code, msg string) *Error { return &Error{Kind: k, Code: code, Message: msg} }

// errCode is the one answer for every code that does not redeem: unknown,
// expired, used, voided or another tenant's (no oracle).
var errCode = fail(KindCode, "the support code is invalid, expired or already used")

// unavailable wraps a storage failure: the caller may try again.
func unavailable(err error) *Error {
	return &Error{Kind: KindUnavailable, Message: "storage is unavailable; try again", cause: err}
}

// As returns err as an *Error, or nil for an unexpected failure.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
