package api

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/httpx"
	"github.com/actas/actas/broker/secrets"
)

// Handler serves the customer API.
type Handler struct {
	core    *core.Service
	secrets secrets.Keys // seals page cursors
	log     *slog.Logger
}

// New builds the customer API.
func New(svc *core.Service, keys secrets.Keys, log *slog.Logger) *Handler {
	return &Handler{core: svc, secrets: keys, log: log}
}

// handlerFunc handles one authenticated customer request; it returns the
// status and body of a success, or an error the adapter maps and logs.
type handlerFunc func(r *http.Request, cu *core.Customer) (int, any, error)

// Mount adds the API routes to r (full paths: mux subrouters answer a
// wrong method with 404).
func (h *Handler) Mount(r *mux.Router) {
	const t = "/api/v1/tenants/{tenant}"
	r.Handle(t+"/support-access", h.serve(h.getSupportAccess)).Methods(http.MethodGet)
	r.Handle(t+"/support-access", h.serve(h.putSupportAccess)).Methods(http.MethodPut)
	r.Handle(t+"/grants", h.serve(h.createGrant)).Methods(http.MethodPost)
	r.Handle(t+"/grants", h.serve(h.listGrants)).Methods(http.MethodGet)
	r.Handle(t+"/grants/{id}", h.serve(h.getGrant)).Methods(http.MethodGet)
	r.Handle(t+"/grants/{id}", h.serve(h.deleteGrant)).Methods(http.MethodDelete)
	r.Handle(t+"/audit", h.serve(h.listAudit)).Methods(http.MethodGet)
	r.Handle(t+"/notifications", h.serve(h.getNotifications)).Methods(http.MethodGet)
	r.Handle(t+"/notifications", h.serve(h.putNotifications)).Methods(http.MethodPut)
	r.Handle(t+"/grants/{id}/approve", h.serve(h.approveGrant)).Methods(http.MethodPost)
	r.Handle(t+"/grants/{id}/deny", h.serve(h.denyGrant)).Methods(http.MethodPost)
	r.Handle(t+"/grants/{id}/code", h.serve(h.fetchCode)).Methods(http.MethodPost)
	r.Handle(t+"/scim-tokens", h.serve(h.createSCIMToken)).Methods(http.MethodPost)
	r.Handle(t+"/scim-tokens/{id}", h.serve(h.deleteSCIMToken)).Methods(http.MethodDelete)
}

func (h *Handler) approveGrant(r *http.Request, cu *core.Customer) (int, any, error) {
	g, err := h.core.ApproveGrant(r.Context(), cu, mux.Vars(r)["id"])
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"grant": toGrantJSON(g, h.core.Now())}, nil
}

func (h *Handler) denyGrant(r *http.Request, cu *core.Customer) (int, any, error) {
	g, err := h.core.DenyGrant(r.Context(), cu, mux.Vars(r)["id"])
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"grant": toGrantJSON(g, h.core.Now())}, nil
}

// fetchCode gives the granter their approved grant's code, once.
func (h *Handler) fetchCode(r *http.Request, cu *core.Customer) (int, any, error) {
	code, err := h.core.FetchCode(r.Context(), cu, mux.Vars(r)["id"])
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]string{"code": code}, nil
}

// createSCIMToken makes the tenant's directory bearer, shown this once.
func (h *Handler) createSCIMToken(r *http.Request, cu *core.Customer) (int, any, error) {
	id, tok, err := h.core.CreateSCIMToken(r.Context(), cu)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, map[string]string{"id": id, "token": tok}, nil
}

func (h *Handler) deleteSCIMToken(r *http.Request, cu *core.Customer) (int, any, error) {
	return http.StatusNoContent, nil, h.core.RevokeSCIMToken(r.Context(), cu, mux.Vars(r)["id"])
}

var errUnauthorized = &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "a valid bearer token from a configured customer issuer is required"}

// serve authenticates the bearer token, requires the path's tenant to be
// the token's tenant, runs fn and writes its answer or its error.
func (h *Handler) serve(fn handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, body, err := h.run(r, fn)
		if err != nil {
			Fail(w, r, h.log, err)
			return
		}
		if body == nil {
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(status)
			return
		}
		httpx.WriteJSON(w, status, body)
	})
}

func (h *Handler) run(r *http.Request, fn handlerFunc) (int, any, error) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return 0, nil, errUnauthorized
	}
	cu, err := h.core.AuthenticateCustomer(r.Context(), tok)
	if err != nil {
		return 0, nil, err
	}
	if mux.Vars(r)["tenant"] != cu.Tenant {
		return 0, nil, &apiError{Status: http.StatusForbidden, Code: "forbidden", Message: "your token is for another tenant"}
	}
	return fn(r, cu)
}

// apiError is the API's error body: {"error", "message"} (and "rule" for a
// policy denial).
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"error"`
	Message string `json:"message"`
	Rule    string `json:"rule,omitempty"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// kindStatus is the status and default code of each core refusal.
var kindStatus = map[core.Kind]struct {
	status int
	code   string
}{
	core.KindInvalid:         {http.StatusBadRequest, "invalid_request"},
	core.KindUnprocessable:   {http.StatusUnprocessableEntity, "unprocessable"},
	core.KindUnauthenticated: {http.StatusUnauthorized, "unauthorized"},
	core.KindForbidden:       {http.StatusForbidden, "forbidden"},
	core.KindNotFound:        {http.StatusNotFound, "not_found"},
	core.KindConflict:        {http.StatusConflict, "conflict"},
	core.KindDenied:          {http.StatusForbidden, "denied"},
	core.KindUnavailable:     {http.StatusServiceUnavailable, "unavailable"},
}

// Fail maps err to the API's error body; unexpected errors and
// unavailability are logged with the request's ID, never shown. Other JSON
// surfaces (hooks) answer through it too.
func Fail(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var ae *apiError
	var be *httpx.BodyError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &be):
		ae = &apiError{Status: be.Status, Code: be.Code, Message: be.Message}
	case core.As(err) != nil:
		ce := core.As(err)
		ks, ok := kindStatus[ce.Kind]
		if !ok {
			ks = kindStatus[core.KindInvalid]
		}
		ae = &apiError{Status: ks.status, Code: ks.code, Message: ce.Message, Rule: ce.Rule}
		if ce.Code != "" {
			ae.Code = ce.Code
		}
	default:
		ae = &apiError{Status: http.StatusInternalServerError, Code: "server_error", Message: "the server could not complete the request"}
	}
	if ae.Status >= 500 {
		log.ErrorContext(r.Context(), r.Method+" "+r.URL.Path, "err", err)
	}
	WriteError(w, ae.Status, ae.Code, ae.Message, ae.Rule)
}

// WriteError writes the API's error body; other JSON surfaces (hooks,
// ops) answer in the same format.
func WriteError(w http.ResponseWriter, status int, code, msg, rule string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="actas", error="invalid_token"`)
	}
	httpx.WriteJSON(w, status, &apiError{Code: code, Message: msg, Rule: rule})
}

func bad(msg string) error {
	return &apiError{Status: http.StatusBadRequest, Code: "invalid_request", Message: msg}
}
