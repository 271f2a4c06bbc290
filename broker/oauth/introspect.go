package oauth

import (
	"encoding/json"
	"net/http"

	"github.com/actas/actas/broker/core"
)

var inactive = []byte(`{"active":false}` + "\n")

// introspect is RFC 7662: only clients allowed to introspect, and only for
// their own audience; everything not active is exactly {"active": false}.
func (h *Handler) introspect(w http.ResponseWriter, r *http.Request) {
	f, c, ok := h.request(w, r, true)
	if !ok {
		return
	}
	if !c.CanIntrospect {
		write(w, ErrUnauthorizedClient.With("this client may not introspect tokens"))
		return
	}
	if oe := f.require("token"); oe != nil {
		write(w, oe)
		return
	}
	resp, err := h.core.Introspect(r.Context(), c.ID, c.Audience, f["token"])
	if err != nil {
		h.fail(w, r, err)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	if resp == nil {
		h.introspection.WithLabelValues("false").Inc()
		w.Write(inactive)
		return
	}
	h.introspection.WithLabelValues("true").Inc()
	json.NewEncoder(w).Encode(resp)
}

// revoke implements RFC 7009. An access token ends itself; a refresh token
// ends its whole grant. Unknown or invalid tokens answer 200; storage
// failures 503.
func (h *Handler) revoke(w http.ResponseWriter, r *http.Request) {
	f, c, ok := h.request(w, r, false)
	if !ok {
		return
	}
	if oe := f.require("token"); oe != nil {
		write(w, oe)
		return
	}
	// token_type_hint is only a hint (RFC 7009 §2.1): an unknown one is
	// ignored and the token is recognised by its form.
	var err error
	if core.LooksLikeJWT(f["token"]) {
		err = h.core.RevokeAccess(r.Context(), c.ID, c.Audience, f["token"])
	} else {
		err = h.core.RevokeRefresh(r.Context(), c.ID, f["token"])
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}
