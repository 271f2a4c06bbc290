package authorize

import (
	"net/http"
	"net/url"
	"slices"

	"github.com/actas/actas/broker/web"
)

type logoutView struct {
	Engineer                                         string
	IDTokenHint, ClientID, PostLogoutRedirect, State string
}

type signedOutView struct {
	WasSignedIn bool
}

// logout is OIDC RP-Initiated Logout 1.0. The browser returns only to a
// post_logout_redirect_uri registered for the client that the
// id_token_hint (or client_id) names, exactly; any other is refused and
// not followed (§3). Without a hint for this very session the engineer is
// asked first, so that a link cannot sign them out (§2). Ending the
// session revokes what was issued in it and tells the clients that hold
// it by back-channel logout.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	var p url.Values
	if r.Method == http.MethodPost {
		if err := web.ParseForm(w, r); err != nil {
			h.pages.fail(w, r, http.StatusBadRequest, "This logout request is malformed.")
			return
		}
		p = r.PostForm
	} else {
		p = r.URL.Query()
	}
	hint, clientID, postURI, state := p.Get("id_token_hint"), p.Get("client_id"), p.Get("post_logout_redirect_uri"), p.Get("state")
	hintSID := ""
	if hint != "" {
		sid, aud, err := h.core.IDTokenHint(hint)
		if err != nil {
			h.pages.fail(w, r, http.StatusBadRequest, "The product sent an ID token that actas did not issue (id_token_hint).")
			return
		}
		if clientID != "" && clientID != aud {
			h.pages.fail(w, r, http.StatusBadRequest, "client_id does not match the id_token_hint's audience.")
			return
		}
		clientID, hintSID = aud, sid
	}
	redirect := ""
	if postURI != "" {
		cl, ok := h.clients[clientID]
		if !ok || !slices.Contains(cl.PostLogoutRedirectURIs, postURI) {
			h.pages.fail(w, r, http.StatusBadRequest, "The product asked to send you to an address it has not registered for after logout (post_logout_redirect_uri). You were not sent there.")
			return
		}
		redirect = postURI
		if state != "" {
			redirect = withQuery(postURI, url.Values{"state": {state}})
		}
	}
	sess, err := h.session(r)
	signedIn := err == nil
	if signedIn {
		confirmed := r.Method == http.MethodPost && p.Get("confirm") == "yes"
		if !confirmed && hintSID != sess.ID {
			h.pages.Render(w, http.StatusOK, "logout", logoutView{Engineer: engineerName(sess),
				IDTokenHint: hint, ClientID: clientID, PostLogoutRedirect: postURI, State: state})
			return
		}
		if err := h.core.EndSession(r.Context(), sess); err != nil {
			h.pages.failErr(w, r, err)
			return
		}
	}
	http.SetCookie(w, web.Cookie(sessionCookie, "", -1))
	if redirect != "" {
		http.Redirect(w, r, redirect, http.StatusSeeOther)
		return
	}
	h.pages.Render(w, http.StatusOK, "signedout", signedOutView{WasSignedIn: signedIn})
}
