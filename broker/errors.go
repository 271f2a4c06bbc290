package broker

import (
	"encoding/json"
	"net/http"
)

// oauthError is an RFC 6749 §5.2 error. Values are predefined; WithDescription
// returns a copy, so the predefined values are never modified.
type oauthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
	status      int
}

var (
	errInvalidRequest       = oauthError{Code: "invalid_request", status: http.StatusBadRequest}
	errInvalidClient        = oauthError{Code: "invalid_client", status: http.StatusUnauthorized}
	errInvalidGrant         = oauthError{Code: "invalid_grant", status: http.StatusBadRequest}
	errUnauthorizedClient   = oauthError{Code: "unauthorized_client", status: http.StatusBadRequest}
	errUnsupportedGrantType = oauthError{Code: "unsupported_grant_type", status: http.StatusBadRequest}
	errInvalidTarget        = oauthError{Code: "invalid_target", status: http.StatusBadRequest}
	errInvalidScope         = oauthError{Code: "invalid_scope", status: http.StatusBadRequest}
	errSlowDown             = oauthError{Code: "slow_down", status: http.StatusBadRequest}
	errTooLarge             = oauthError{Code: "invalid_request", Description: "request body is larger than 64 KiB", status: http.StatusRequestEntityTooLarge}
	errMethod               = oauthError{Code: "invalid_request", Description: "use POST", status: http.StatusMethodNotAllowed}
	errServer               = oauthError{Code: "server_error", Description: "the server could not complete the request", status: http.StatusInternalServerError}
	errUnavailable          = oauthError{Code: "temporarily_unavailable", Description: "storage is unavailable; try again", status: http.StatusServiceUnavailable}
)

func (e oauthError) Error() string { return e.Code + ": " + e.Description }

// with returns a copy of e carrying a human description.
func (e oauthError) with(desc string) oauthError {
	e.Description = desc
	return e
}

// writeOAuthError writes e as RFC 6749 JSON with no-store caching.
func writeOAuthError(w http.ResponseWriter, e oauthError) {
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

// apiError is the customer API's error: {"error", "message"}.
type apiError struct {
	Code    string `json:"error"`
	Message string `json:"message"`
	status  int
}

func (e apiError) Error() string { return e.Code + ": " + e.Message }

func apiErr(status int, code, msg string) apiError {
	return apiError{Code: code, Message: msg, status: status}
}

var (
	apiUnauthorized = apiErr(http.StatusUnauthorized, "unauthorized", "a valid bearer token from a configured customer issuer is required")
	apiForbidden    = apiErr(http.StatusForbidden, "forbidden", "your token does not allow this")
	apiNotFound     = apiErr(http.StatusNotFound, "not_found", "no such resource")
	apiTooLarge     = apiErr(http.StatusRequestEntityTooLarge, "request_too_large", "request body is larger than 64 KiB")
	apiUnavailable  = apiErr(http.StatusServiceUnavailable, "unavailable", "storage is unavailable; try again")
	apiServer       = apiErr(http.StatusInternalServerError, "server_error", "the server could not complete the request")
)

func writeAPIError(w http.ResponseWriter, e apiError) {
	h := w.Header()
	if e.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="actas", error="invalid_token"`)
	}
	writeJSON(w, e.status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
