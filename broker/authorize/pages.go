package authorize

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/httpx"
	"github.com/actas/actas/storage"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// assetHandler serves the embedded stylesheet; nothing comes from a CDN.
func assetHandler() http.Handler {
	sub, _ := fs.Sub(assetFS, "assets")
	files := http.StripPrefix("/assets/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}

// pages renders the provider's HTML pages: one template per page plus the
// layout, a view struct each.
type pages struct {
	t map[string]*template.Template
}

func newPages() *pages {
	funcs := template.FuncMap{
		"when": func(t time.Time) string { return t.UTC().Format("Mon 2 Jan 2006, 15:04 MST") },
		"iso":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"in":   relative,
		"join": func(l []string) string { return strings.Join(l, ", ") },
	}
	p := &pages{t: map[string]*template.Template{}}
	for _, name := range []string{"choose", "confirm", "error", "refused", "logout", "signedout"} {
		p.t[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	return p
}

// relative says how far t is from now, in words.
func relative(t time.Time) string {
	d := time.Until(t).Round(time.Minute)
	past := d < 0
	if past {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		return "now"
	case d < time.Hour:
		s = fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	default:
		s = fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	if past {
		return s + " ago"
	}
	return "in " + s
}

// render writes a page with the headers every page carries: a CSP that
// allows nothing but this origin's own files (no inline script or style),
// no framing, no caching, no referrer (a page URL names a request).
func (p *pages) render(w http.ResponseWriter, status int, name string, view any) {
	var buf bytes.Buffer
	if err := p.t[name].Execute(&buf, view); err != nil {
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

type errorView struct {
	Title, Message, RequestID string
}

// fail shows an error page; nothing is redirected.
func (p *pages) fail(w http.ResponseWriter, r *http.Request, status int, msg, _ string) {
	p.render(w, status, "error", errorView{Title: http.StatusText(status), Message: msg, RequestID: httpx.RequestID(r.Context())})
}

// failErr shows a core refusal, or a generic failure for anything else
// (its cause is logged by the caller's middleware, never shown).
func (p *pages) failErr(w http.ResponseWriter, r *http.Request, err error, _ string) {
	ce := core.As(err)
	switch {
	case ce == nil:
		p.fail(w, r, http.StatusInternalServerError, "Something went wrong on our side. Try again from the product.", "")
	case ce.Kind == core.KindUnavailable:
		p.fail(w, r, http.StatusServiceUnavailable, ce.Message, "")
	case ce.Kind == core.KindNotFound:
		p.fail(w, r, http.StatusNotFound, ce.Message, "")
	case ce.Kind == core.KindUnauthenticated:
		p.fail(w, r, http.StatusUnauthorized, ce.Message+". Start again from the product.", "")
	default:
		p.fail(w, r, http.StatusBadRequest, ce.Message, "")
	}
}

type refusedView struct {
	Reason, Back, Product string
}

// refused tells an engineer the policy refused them, before any code entry.
func (p *pages) refused(w http.ResponseWriter, _ *http.Request, a storage.AuthRequest, reason, back string) {
	p.render(w, http.StatusForbidden, "refused", refusedView{Reason: reason, Back: back, Product: a.ClientID})
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
		h.pages.failErr(w, r, err, "")
		return
	}
	v := chooseView{Req: a.ID, Product: a.ClientID, Engineer: engineerName(sess), Tenant: tenant,
		CodeLength: h.core.Policy().Code.Length, Error: msg}
	for _, g := range gs {
		v.Grants = append(v.Grants, viewGrant(g))
	}
	h.pages.render(w, status, "choose", v)
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
		h.pages.failErr(w, r, err, "")
		return a, storage.Session{}, false
	}
	sess, err := h.session(r)
	if err != nil || (a.SessionID != "" && a.SessionID != sess.ID) {
		if ce := core.As(err); ce != nil && ce.Kind == core.KindUnavailable {
			h.pages.failErr(w, r, err, "")
			return a, sess, false
		}
		// Signed out (or idle too long) half-way: sign in again.
		h.toUpstream(w, r, a, false)
		return a, sess, false
	}
	return a, sess, true
}

type confirmView struct {
	Req, Product, Engineer string
	Grant                  grantView
}

// chosen takes the engineer's choice: one of their live grants, or a
// tenant and support code to redeem (token exchange's own redemption).
func (h *Handler) chosen(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		h.pages.fail(w, r, http.StatusBadRequest, "This form is malformed.", "")
		return
	}
	a, sess, ok := h.flow(w, r, r.PostForm.Get("req"))
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
		h.pages.failErr(w, r, err, "")
		return
	}
	h.pages.render(w, http.StatusOK, "confirm", confirmView{Req: a.ID, Product: a.ClientID, Engineer: engineerName(sess), Grant: viewGrant(g)})
}

// confirm answers the request: with a code for the confirmed grant
// (OIDC Core §3.1.2.5, with RFC 9207's iss), or access_denied.
func (h *Handler) confirm(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		h.pages.fail(w, r, http.StatusBadRequest, "This form is malformed.", "")
		return
	}
	a, sess, ok := h.flow(w, r, r.PostForm.Get("req"))
	if !ok {
		return
	}
	http.SetCookie(w, &http.Cookie{Name: requestCookie + a.ID, Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	if r.PostForm.Get("decision") != "allow" {
		h.redirectError(w, r, a.RedirectURI, a.State, "access_denied", "the engineer cancelled")
		return
	}
	code, err := h.core.IssueAuthCode(r.Context(), a, sess, r.PostForm.Get("grant"))
	if err != nil {
		h.pages.failErr(w, r, err, "")
		return
	}
	v := url.Values{"code": {code}, "iss": {h.issuer}}
	if a.State != "" {
		v.Set("state", a.State)
	}
	http.Redirect(w, r, withQuery(a.RedirectURI, v), http.StatusSeeOther)
}

// parseForm reads a page's form POST: form-encoded, at most 16 KiB.
func parseForm(w http.ResponseWriter, r *http.Request) error {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return fmt.Errorf("content type %q", ct)
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	return r.ParseForm()
}
