package authorize

import (
	"embed"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/httpx"
	"github.com/actas/actas/broker/web"
	"github.com/actas/actas/storage"
)

//go:embed templates/*.html
var templateFS embed.FS

// pages renders the provider's HTML pages through the shared layout.
type pages struct{ *web.Pages }

func newPages() *pages {
	return &pages{web.NewPages(templateFS, "choose", "confirm", "error", "refused", "logout", "signedout")}
}

type errorView struct {
	Title, Message, RequestID string
}

// fail shows an error page; nothing is redirected.
func (p *pages) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	p.Render(w, status, "error", errorView{Title: http.StatusText(status), Message: msg, RequestID: httpx.RequestID(r.Context())})
}

// failErr shows a core refusal, or a generic failure for anything else
// (its cause is logged by the caller's middleware, never shown).
func (p *pages) failErr(w http.ResponseWriter, r *http.Request, err error) {
	ce := core.As(err)
	switch {
	case ce == nil:
		p.fail(w, r, http.StatusInternalServerError, "Something went wrong on our side. Try again from the product.")
	case ce.Kind == core.KindUnavailable:
		p.fail(w, r, http.StatusServiceUnavailable, ce.Message)
	case ce.Kind == core.KindNotFound:
		p.fail(w, r, http.StatusNotFound, ce.Message)
	case ce.Kind == core.KindUnauthenticated:
		p.fail(w, r, http.StatusUnauthorized, ce.Message+". Start again from the product.")
	default:
		p.fail(w, r, http.StatusBadRequest, ce.Message)
	}
}

type refusedView struct {
	Reason, Back, Product string
}

// refused tells an engineer the policy refused them, before any code entry.
func (p *pages) refused(w http.ResponseWriter, _ *http.Request, a storage.AuthRequest, reason, back string) {
	p.Render(w, http.StatusForbidden, "refused", refusedView{Reason: reason, Back: back, Product: a.ClientID})
}

// grantView is a grant as the engineer sees it.
type grantView struct {
	ID, Customer, Tenant, Role, Ticket string
	Environments, Resources            []string
	Expires                            time.Time
}

func viewGrant(g storage.Grant) grantView {
	return grantView{ID: g.ID, Customer: customerName(g), Tenant: g.TenantID, Role: g.Role, Ticket: g.Ticket,
		Environments: g.Environments, Resources: g.Resources, Expires: g.ExpiresAt}
}

// customerName is how the granting user is named: their name and address
// from their token when they had them, their subject otherwise.
func customerName(g storage.Grant) string {
	var c struct {
		Name  string `json:"name"`
		Email string `json:"email"`
	}
	json.Unmarshal(g.GranterClaims, &c)
	switch {
	case c.Name != "" && c.Email != "":
		return c.Name + " <" + c.Email + ">"
	case c.Email != "":
		return c.Email
	case c.Name != "":
		return c.Name
	}
	return g.GrantedBy
}

type chooseView struct {
	Req, Product, Engineer string
	Grants                 []grantView
	Tenant                 string
	CodeLength             int
	Error                  string
}

// choose offers the signed-in engineer their live grants and a form for
// a tenant and support code.
func (h *Handler) choose(w http.ResponseWriter, r *http.Request) {
	a, sess, ok := h.flow(w, r, r.URL.Query().Get("req"))
	if ok {
		h.renderChoose(w, r, a, sess, http.StatusOK, "", "")
	}
}

func (h *Handler) renderChoose(w http.ResponseWriter, r *http.Request, a storage.AuthRequest, sess storage.Session, status int, tenant, msg string) {
	gs, err := h.core.EngineerGrants(r.Context(), sess)
	if err != nil {
		h.pages.failErr(w, r, err)
		return
	}
	v := chooseView{Req: a.ID, Product: a.ClientID, Engineer: engineerName(sess), Tenant: tenant,
		CodeLength: h.core.Policy().Code.Length, Error: msg}
	for _, g := range gs {
		v.Grants = append(v.Grants, viewGrant(g))
	}
	h.pages.Render(w, status, "choose", v)
}

func engineerName(s storage.Session) string {
	if s.Email != "" {
		return s.Email
	}
	return s.Subject
}

// flow loads the request of this browser and the engineer's session,
// which must be the one the request signed in with, if it did. It answers
// the browser itself when either is missing.
func (h *Handler) flow(w http.ResponseWriter, r *http.Request, id string) (storage.AuthRequest, storage.Session, bool) {
	a, err := h.request(r, id)
	if err != nil {
		h.pages.failErr(w, r, err)
		return a, storage.Session{}, false
	}
	sess, err := h.session(r)
	if err != nil || (a.SessionID != "" && a.SessionID != sess.ID) {
		if ce := core.As(err); ce != nil && ce.Kind == core.KindUnavailable {
			h.pages.failErr(w, r, err)
			return a, sess, false
		}
		// Signed out (or idle too long) half-way: sign in again.
		h.toUpstream(w, r, a, false)
		return a, sess, false
	}
	return a, sess, true
}

// postFlow is flow for a form POST naming its request in "req".
func (h *Handler) postFlow(w http.ResponseWriter, r *http.Request) (storage.AuthRequest, storage.Session, bool) {
	if err := web.ParseForm(w, r); err != nil {
		h.pages.fail(w, r, http.StatusBadRequest, "This form is malformed.")
		return storage.AuthRequest{}, storage.Session{}, false
	}
	return h.flow(w, r, r.PostForm.Get("req"))
}

type confirmView struct {
	Req, Product, Engineer string
	Grant                  grantView
}

// chosen takes the engineer's choice: one of their live grants, or a
// tenant and support code to redeem (token exchange's own redemption).
func (h *Handler) chosen(w http.ResponseWriter, r *http.Request) {
	a, sess, ok := h.postFlow(w, r)
	if !ok {
		return
	}
	var g storage.Grant
	var err error
	if id := r.PostForm.Get("grant"); id != "" {
		g, err = h.core.SessionGrant(r.Context(), sess, id)
	} else {
		tenant := strings.TrimSpace(r.PostForm.Get("tenant"))
		g, err = h.core.RedeemInBrowser(r.Context(), sess, a.ClientID, tenant, r.PostForm.Get("code"))
		if ce := core.As(err); ce != nil && ce.Kind != core.KindUnavailable {
			status := http.StatusBadRequest
			if ce.Kind == core.KindLocked {
				status = http.StatusTooManyRequests
			}
			h.renderChoose(w, r, a, sess, status, tenant, ce.Message)
			return
		}
	}
	if err != nil {
		h.pages.failErr(w, r, err)
		return
	}
	h.pages.Render(w, http.StatusOK, "confirm", confirmView{Req: a.ID, Product: a.ClientID, Engineer: engineerName(sess), Grant: viewGrant(g)})
}

// confirm answers the request: with a code for the confirmed grant
// (OIDC Core §3.1.2.5, with RFC 9207's iss), or access_denied.
func (h *Handler) confirm(w http.ResponseWriter, r *http.Request) {
	a, sess, ok := h.postFlow(w, r)
	if !ok {
		return
	}
	http.SetCookie(w, web.Cookie(requestCookie+a.ID, "", -1))
	if r.PostForm.Get("decision") != "allow" {
		h.redirectError(w, r, a.RedirectURI, a.State, "access_denied", "the engineer cancelled")
		return
	}
	code, err := h.core.IssueAuthCode(r.Context(), a, sess, r.PostForm.Get("grant"))
	if err != nil {
		h.pages.failErr(w, r, err)
		return
	}
	v := url.Values{"code": {code}, "iss": {h.issuer}}
	if a.State != "" {
		v.Set("state", a.State)
	}
	http.Redirect(w, r, withQuery(a.RedirectURI, v), http.StatusSeeOther)
}
