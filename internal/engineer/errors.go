package engineer

import "fmt"

// Exit statuses of `actas support`, one per way it can fail, so that
// scripts can tell "sign in again" from "ask for a new code".
const (
	ExitError       = 1 // anything else: the message says what
	ExitUsage       = 2
	ExitLogin       = 3 // not signed in, or the sign-in expired: run login
	ExitRefused     = 4 // the broker refused the code or the request
	ExitLocked      = 5 // too many failed redemptions: wait
	ExitUnreachable = 6 // the broker or the support IdP cannot be reached or is unavailable
	ExitGrantEnded  = 7 // the grant was terminated, revoked or expired
)

// Error is a failure the CLI reports as one message and an exit status.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

var errNotSignedIn = &Error{Code: ExitLogin, Msg: "not signed in to this broker: run 'actas support login'"}
