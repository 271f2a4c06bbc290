package scim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/httpx"
	"github.com/actas/actas/storage"
)

// Schema URNs (RFC 7643 §8.7, RFC 7644 §3).
const (
	userSchema  = "urn:ietf:params:scim:schemas:core:2.0:User"
	listSchema  = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	patchSchema = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	errorSchema = "urn:ietf:params:scim:api:messages:2.0:Error"
	maxResults  = 200
)

// Handler serves SCIM.
type Handler struct {
	core *core.Service
	log  *slog.Logger
}

// New builds the surface.
func New(svc *core.Service, log *slog.Logger) *Handler { return &Handler{core: svc, log: log} }

// Mount adds the SCIM routes to r.
func (h *Handler) Mount(r *mux.Router) {
	const b = "/scim/v2/{tenant}"
	r.Handle(b+"/Users", h.serve(h.listUsers)).Methods(http.MethodGet)
	r.Handle(b+"/Users", h.serve(h.createUser)).Methods(http.MethodPost)
	r.Handle(b+"/Users/{id}", h.serve(h.getUser)).Methods(http.MethodGet)
	r.Handle(b+"/Users/{id}", h.serve(h.replaceUser)).Methods(http.MethodPut)
	r.Handle(b+"/Users/{id}", h.serve(h.patchUser)).Methods(http.MethodPatch)
	r.Handle(b+"/Users/{id}", h.serve(h.deleteUser)).Methods(http.MethodDelete)
	r.Handle(b+"/ServiceProviderConfig", h.serve(h.serviceProviderConfig)).Methods(http.MethodGet)
	r.Handle(b+"/ResourceTypes", h.serve(h.resourceTypes)).Methods(http.MethodGet)
	r.Handle(b+"/Schemas", h.serve(h.schemas)).Methods(http.MethodGet)
}

type handlerFunc func(r *http.Request, d *core.Directory) (int, any, error)

// scimError is RFC 7644 §3.12's error.
type scimError struct {
	status   int
	scimType string
	detail   string
}

func (e *scimError) Error() string { return e.detail }

func bad(scimType, format string, args ...any) error {
	return &scimError{status: http.StatusBadRequest, scimType: scimType, detail: fmt.Sprintf(format, args...)}
}

func (h *Handler) serve(fn handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		var d *core.Directory
		err := error(&scimError{status: http.StatusUnauthorized, detail: "a SCIM bearer token of this tenant is required"})
		if strings.EqualFold(scheme, "Bearer") {
			d, err = h.core.AuthenticateDirectory(r.Context(), tok, mux.Vars(r)["tenant"])
		}
		status, body := 0, any(nil)
		if err == nil {
			status, body, err = fn(r, d)
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		if body == nil {
			w.WriteHeader(status)
			return
		}
		w.Header().Set("Content-Type", "application/scim+json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	})
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	se := &scimError{status: http.StatusInternalServerError, detail: "the server could not complete the request"}
	var e *scimError
	var be *httpx.BodyError
	switch ce := core.As(err); {
	case errors.As(err, &e):
		se = e
	case errors.As(err, &be):
		se = &scimError{status: be.Status, scimType: "invalidSyntax", detail: be.Message}
	case ce != nil:
		switch ce.Kind {
		case core.KindUnauthenticated:
			se = &scimError{status: http.StatusUnauthorized, detail: ce.Message}
		case core.KindNotFound:
			se = &scimError{status: http.StatusNotFound, detail: ce.Message}
		case core.KindConflict:
			se = &scimError{status: http.StatusConflict, scimType: "uniqueness", detail: ce.Message}
		case core.KindUnavailable:
			se = &scimError{status: http.StatusServiceUnavailable, detail: ce.Message}
		default:
			se = &scimError{status: http.StatusBadRequest, scimType: "invalidValue", detail: ce.Message}
		}
	}
	if se.status >= 500 {
		h.log.ErrorContext(r.Context(), "scim "+r.Method+" "+r.URL.Path, "err", err)
	}
	if se.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="actas-scim"`)
	}
	body := map[string]any{"schemas": []string{errorSchema}, "status": strconv.Itoa(se.status), "detail": se.detail}
	if se.scimType != "" {
		body["scimType"] = se.scimType
	}
	w.Header().Set("Content-Type", "application/scim+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(se.status)
	json.NewEncoder(w).Encode(body)
}

// readJSON reads a SCIM body (application/scim+json or application/json)
// into a generic object: IdPs send attributes actas ignores.
func readJSON(r *http.Request) (map[string]any, error) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/scim+json" && mt != "application/json" {
		return nil, bad("invalidSyntax", "Content-Type must be application/scim+json")
	}
	body, err := httpx.ReadBody(r)
	if errors.Is(err, httpx.ErrBodyTooLarge) {
		return nil, &scimError{status: http.StatusRequestEntityTooLarge, detail: "request body is larger than 64 KiB"}
	}
	if err != nil {
		return nil, bad("invalidSyntax", "could not read the request body")
	}
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, bad("invalidSyntax", "the body is not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad("invalidSyntax", "unexpected data after the JSON object")
	}
	return m, nil
}

// toJSON is a user as SCIM shows it.
func (h *Handler) toJSON(r *http.Request, u storage.DirectoryUser) map[string]any {
	emails := make([]map[string]any, len(u.Emails))
	for i, e := range u.Emails {
		emails[i] = map[string]any{"value": e, "primary": i == 0}
	}
	out := map[string]any{
		"schemas": []string{userSchema}, "id": u.ID, "userName": u.UserName, "active": u.Active, "emails": emails,
		"meta": map[string]any{"resourceType": "User", "created": u.CreatedAt.UTC().Format(time.RFC3339),
			"lastModified": u.UpdatedAt.UTC().Format(time.RFC3339),
			"location":     h.core.Issuer() + "/scim/v2/" + u.TenantID + "/Users/" + u.ID},
	}
	if u.ExternalID != "" {
		out["externalId"] = u.ExternalID
	}
	if u.DisplayName != "" {
		out["displayName"] = u.DisplayName
	}
	if u.Role != "" {
		out["roles"] = []map[string]any{{"value": u.Role, "primary": true}}
	}
	return out
}
