package oauth

import (
	"encoding/json"
	"net/http"

	"github.com/actas/actas/broker/core"
)

// Error is an RFC 6749 §5.2 error. The predefined values are never
// modified: With returns a copy.
type Error struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
	status      int
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

// With returns a copy of e carrying a human description.
func (e *Error) With(desc string) *Error {
	c := *e
	c.Description = desc
	return &c
}

// Predefined errors (RFC 6749 §5.2, RFC 8693 §2.2.2, RFC 7009 §2.2.1).
var (
	ErrInvalidRequest       = &Error{Code: "invalid_request", status: http.StatusBadRequest}
	ErrInvalidClient        = &Error{Code: "invalid_client", status: http.StatusUnauthorized}
	ErrInvalidGrant         = &Error{Code: "invalid_grant", status: http.StatusBadRequest}
	ErrUnauthorizedClient   = &Error{Code: "unauthorized_client", status: http.StatusBadRequest}
	ErrUnsupportedGrantType = &Error{Code: "unsupported_grant_type", status: http.StatusBadRequest}
	ErrInvalidTarget        = &Error{Code: "invalid_target", status: http.StatusBadRequest}
	ErrInvalidScope         = &Error{Code: "invalid_scope", status: http.StatusBadRequest}
	ErrSlowDown             = &Error{Code: "slow_down", status: http.StatusBadRequest}
	ErrTooLarge             = &Error{Code: "invalid_request", Description: "request body is larger than 64 KiB", status: http.StatusRequestEntityTooLarge}
	ErrMethod               = &Error{Code: "invalid_request", Description: "use POST", status: http.StatusMethodNotAllowed}
	ErrServer               = &Error{Code: "server_error", Description: "the server could not complete the request", status: http.StatusInternalServerError}
	ErrUnavailable          = &Error{Code: "temporarily_unavailable", Description: "storage is unavailable; try again", status: http.StatusServiceUnavailable}
)

// fromCore maps a core refusal to the OAuth error a client sees; nil for
// an unexpected failure (server_error).
func fromCore(err error) *Error {
	ce := core.As(err)
	if ce == nil {
		return nil
	}
	switch ce.Kind {
	case core.KindLocked:
		return ErrSlowDown.With(ce.Message)
	case core.KindScope:
		return ErrInvalidScope.With(ce.Message)
	case core.KindTarget:
		return ErrInvalidTarget.With(ce.Message)
	case core.KindGrant:
		return ErrInvalidGrant.With(ce.Message)
	case core.KindProof:
		return ErrInvalidDPoPProof.With(ce.Message)
	case core.KindClient:
		return ErrUnauthorizedClient.With(ce.Message)
	case core.KindUnavailable:
		return ErrUnavailable.With(ce.Message)
	case core.KindDenied:
		return ErrInvalidRequest.With("access denied by policy: " + ce.Message)
	}
	return ErrInvalidRequest.With(ce.Message)
}

// write writes e as RFC 6749 JSON with no-store caching.
func write(w http.ResponseWriter, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if e.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Basic realm="actas"`)
	}
	if e.status == http.StatusMethodNotAllowed {
		h.Set("Allow", http.MethodPost)
	}
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(e)
}
