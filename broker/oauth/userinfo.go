package oauth

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/httpx"
	"github.com/actas/actas/claims"
)

// userInfo is the OIDC Core §5.3 answer: the customer the token acts as,
// the engineer acting, and the grant, all from stored state.
type userInfo struct {
	Sub          string       `json:"sub"`
	Act          claims.Actor `json:"act"`
	Tenant       string       `json:"tenant"`
	Roles        []string     `json:"roles"`
	Environments []string     `json:"environments"`
	Resources    []string     `json:"resources,omitempty"`
	GrantID      string       `json:"grant_id"`
	GrantExp     int64        `json:"grant_exp"`
	Ticket       string       `json:"ticket,omitempty"`
}

// bearerError is an RFC 6750 §3 / RFC 9449 §7.1 refusal of a presented
// access token: a challenge for each scheme actas accepts, the error in
// the scheme the client used.
type bearerError struct {
	scheme string // "" when no token was presented
	code   string // invalid_request, invalid_token, invalid_dpop_proof
	desc   string
	status int
}

func (e *bearerError) write(w http.ResponseWriter) {
	bearer := `Bearer realm="actas"`
	dp := fmt.Sprintf(`DPoP realm="actas", algs="%s"`, strings.Join(dpopAlgs, " "))
	params := fmt.Sprintf(`, error="%s", error_description="%s"`, e.code, strings.ReplaceAll(e.desc, `"`, `'`))
	switch e.scheme {
	case "bearer":
		bearer += params
	case "dpop":
		dp += params
	}
	h := w.Header()
	h.Add("WWW-Authenticate", bearer)
	h.Add("WWW-Authenticate", dp)
	h.Set("Cache-Control", "no-store")
	if e.code == "" {
		w.WriteHeader(e.status)
		return
	}
	httpx.WriteJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

// userinfo serves OIDC UserInfo for actas access tokens, bearer or
// DPoP-bound (RFC 9449 §7): a bound token needs the DPoP scheme and a
// fresh proof with its key; every answer re-checks revocation.
func (h *Handler) userinfo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		httpx.WriteJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "invalid_request", "error_description": "use GET or POST"})
		return
	}
	in, be := h.presented(r)
	if be != nil {
		be.write(w)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, userInfo{
		Sub: in.Sub, Act: in.Act, Tenant: in.Tenant, Roles: in.Roles, Environments: in.Environments,
		Resources: in.Resources, GrantID: in.GrantID, GrantExp: in.GrantExp, Ticket: in.Ticket,
	})
}

// presented authenticates the request's access token (Authorization
// header only: tokens never travel in URLs or forms here) and answers
// from stored state.
func (h *Handler) presented(r *http.Request) (*core.Introspection, *bearerError) {
	auth := r.Header.Values("Authorization")
	if len(auth) == 0 {
		return nil, &bearerError{status: http.StatusUnauthorized}
	}
	scheme, token, ok := strings.Cut(auth[0], " ")
	scheme = strings.ToLower(scheme)
	if len(auth) > 1 || !ok || token == "" || (scheme != "bearer" && scheme != "dpop") {
		return nil, &bearerError{scheme: "bearer", code: "invalid_request", desc: "send one Authorization header: Bearer or DPoP with the access token", status: http.StatusBadRequest}
	}
	bad := func(desc string) *bearerError {
		return &bearerError{scheme: scheme, code: "invalid_token", desc: desc, status: http.StatusUnauthorized}
	}
	at := h.core.ParseAccessToken(token)
	if at == nil {
		return nil, bad("the access token is invalid or expired")
	}
	jkt := at.Bound()
	switch {
	case scheme == "bearer" && jkt != "":
		// RFC 9449 §7.2: a stolen copy of a bound token is useless as a bearer.
		return nil, &bearerError{scheme: "dpop", code: "invalid_token", desc: "the access token is DPoP-bound: present it with the DPoP scheme and a proof", status: http.StatusUnauthorized}
	case scheme == "dpop" && jkt == "":
		return nil, bad("the access token is not DPoP-bound: present it with the Bearer scheme")
	case scheme == "dpop":
		got, err := h.proof(r.Context(), r, "/userinfo", token)
		if ce := core.As(err); ce != nil && ce.Kind == core.KindUnavailable {
			return nil, &bearerError{scheme: scheme, code: "temporarily_unavailable", desc: ce.Message, status: http.StatusServiceUnavailable}
		}
		if err != nil || got == "" || got != jkt {
			desc := "a DPoP proof made with the token's key is required"
			if err != nil {
				if oe, ok := proofError(err).(*Error); ok {
					desc = oe.Description
				}
			}
			return nil, &bearerError{scheme: scheme, code: "invalid_dpop_proof", desc: desc, status: http.StatusUnauthorized}
		}
	}
	in, err := h.core.UserInfo(r.Context(), at)
	if err != nil {
		h.log.ErrorContext(r.Context(), "userinfo", "err", err)
		return nil, &bearerError{scheme: scheme, code: "temporarily_unavailable", desc: "storage is unavailable; try again", status: http.StatusServiceUnavailable}
	}
	if in == nil {
		return nil, bad("the access token is no longer active")
	}
	return in, nil
}
