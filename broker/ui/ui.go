package ui

import (
	"embed"
	"log/slog"
	"net/http"
	"net/url"
	"slices"

	"github.com/gorilla/mux"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/upstream"
	"github.com/actas/actas/broker/web"
	"github.com/actas/actas/config"
	"github.com/actas/actas/storage"
)

// Cookie names (see web.Cookie for their attributes).
const (
	sessionCookie = "__Host-actas_session"
	// signInCookie is suffixed with the sign-in's ID: two tabs signing in
	// at once do not overwrite each other's binding.
	signInCookie = "__Host-actas_ui_"
)

//go:embed templates/*.html
var templateFS embed.FS

// Handler serves the customer's self-service page under /ui/.
type Handler struct {
	core   *core.Service
	signIn map[string]*upstream.SignIn // by issuer
	pages  *web.Pages
	log    *slog.Logger
	// done ends the live feeds when the server shuts down: http.Server's
	// Shutdown waits for handlers and cancels no request context.
	done <-chan struct{}
}

// New builds the page for the customer issuers that have a client_id;
// client reaches them, done closes when the server stops.
func New(svc *core.Service, op *config.Config, client *http.Client, log *slog.Logger, done <-chan struct{}) *Handler {
	h := &Handler{core: svc, signIn: map[string]*upstream.SignIn{}, log: log, done: done,
		pages: web.NewPages(templateFS, "signin", "home", "give", "code", "activity", "settings", "signedout", "error")}
	for _, ci := range op.CustomerIDPs {
		if ci.ClientID != "" {
			h.signIn[ci.Issuer] = &upstream.SignIn{Issuer: ci.Issuer, ClientID: ci.ClientID, ClientSecret: ci.ClientSecret,
				RedirectURL: op.Issuer + "/ui/callback", Scopes: []string{"openid", "email", "profile"}, Client: client}
		}
	}
	return h
}

// Mount adds the page's routes to r. Every POST is refused when it comes
// from another origin (http.CrossOriginProtection), and each acts only
// for the session's own customer, whose role the core checks.
func (h *Handler) Mount(r *mux.Router) {
	cop := http.NewCrossOriginProtection()
	post := func(path string, fn func(http.ResponseWriter, *http.Request, *visitor)) {
		r.Handle(path, cop.Handler(h.customer(fn))).Methods(http.MethodPost)
	}
	get := func(path string, fn func(http.ResponseWriter, *http.Request, *visitor)) {
		r.Handle(path, h.customer(fn)).Methods(http.MethodGet)
	}
	r.HandleFunc("/ui", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) }).Methods(http.MethodGet)
	r.HandleFunc("/ui/login", h.login).Methods(http.MethodGet)
	r.HandleFunc("/ui/callback", h.callback).Methods(http.MethodGet)
	get("/ui/", h.home)
	get("/ui/grants/new", h.giveForm)
	post("/ui/grants", h.give)
	post("/ui/grants/{id}/terminate", h.terminate)
	post("/ui/support-access", h.toggle)
	get("/ui/activity", h.activity)
	get("/ui/settings", h.settings)
	post("/ui/settings", h.saveSettings)
	post("/ui/logout", h.logout)
	get("/ui/events", h.events)
}

// visitor is the signed-in customer and their session.
type visitor struct {
	*core.Customer
	session storage.Session
}

// customer runs fn for the signed-in customer; without a live session the
// browser goes to sign in (a page) or gets 401 (the feed).
func (h *Handler) customer(fn func(http.ResponseWriter, *http.Request, *visitor)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(sessionCookie)
		v := &visitor{}
		if err == nil {
			v.Customer, v.session, err = h.core.PageCustomer(r.Context(), c.Value)
		}
		if err != nil {
			if ce := core.As(err); ce != nil && ce.Kind == core.KindUnavailable {
				h.fail(w, r, err)
				return
			}
			if r.URL.Path == "/ui/events" {
				http.Error(w, "not signed in", http.StatusUnauthorized)
				return
			}
			if r.Method == http.MethodPost {
				h.pages.Render(w, http.StatusUnauthorized, "error", errorView{Title: "Signed out",
					Message: "Your session has ended, so nothing was changed. Sign in again and repeat what you did."})
				return
			}
			h.signInPage(w, r, http.StatusOK, reason(err))
			return
		}
		fn(w, r, v)
	})
}

// reason says why a session is not usable, when it is worth saying.
func reason(err error) string {
	if ce := core.As(err); ce != nil && ce.Message != "not signed in" {
		return ce.Message
	}
	return ""
}

type signInView struct {
	Issuers []issuerLink
	Message string
}

type issuerLink struct{ Name, URL string }

func (h *Handler) signInPage(w http.ResponseWriter, _ *http.Request, status int, msg string) {
	v := signInView{Message: msg}
	for _, iss := range h.core.PageIssuers() {
		if h.signIn[iss] == nil {
			continue
		}
		name := iss
		if u, err := url.Parse(iss); err == nil {
			name = u.Host
		}
		v.Issuers = append(v.Issuers, issuerLink{Name: name, URL: "/ui/login?" + url.Values{"iss": {iss}}.Encode()})
	}
	h.pages.Render(w, status, "signin", v)
}

// login starts the sign-in at the customer's IdP: ?iss= picks one, or the
// only one configured.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	iss := r.URL.Query().Get("iss")
	if issuers := h.core.PageIssuers(); iss == "" && len(issuers) == 1 {
		iss = issuers[0]
	}
	si := h.signIn[iss]
	if si == nil || !slices.Contains(h.core.PageIssuers(), iss) {
		h.signInPage(w, r, http.StatusBadRequest, "Choose your organisation's identity provider.")
		return
	}
	a, browser, err := h.core.NewCustomerSignIn(r.Context(), iss)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	http.SetCookie(w, web.Cookie(signInCookie+a.ID, browser, core.AuthRequestTTL))
	u, err := si.AuthURL(r.Context(), a, false)
	if err != nil {
		h.log.ErrorContext(r.Context(), "ui: customer IdP", "issuer", iss, "err", err)
		h.pages.Render(w, http.StatusServiceUnavailable, "error", errorView{Title: "Identity provider unreachable",
			Message: "Your organisation's identity provider cannot be reached. Try again in a moment."})
		return
	}
	http.Redirect(w, r, u, http.StatusFound)
}

// callback finishes the sign-in (state is the sign-in's ID, usable only in
// the browser that started it) and starts the session.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id := q.Get("state")
	c, err := r.Cookie(signInCookie + id)
	if err != nil {
		h.fail(w, r, core.ErrAuthRequest)
		return
	}
	a, err := h.core.AuthRequest(r.Context(), id, c.Value)
	if err == nil && a.ClientID != "" {
		err = core.ErrAuthRequest // a product's authorization request, not a page sign-in
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	http.SetCookie(w, web.Cookie(signInCookie+id, "", -1))
	if q.Get("error") != "" {
		h.signInPage(w, r, http.StatusOK, "Your identity provider did not sign you in.")
		return
	}
	si := h.signIn[a.Upstream]
	if si == nil {
		h.fail(w, r, core.ErrAuthRequest)
		return
	}
	raw, err := si.Exchange(r.Context(), a, q.Get("code"))
	if err != nil {
		h.log.WarnContext(r.Context(), "ui: customer IdP code exchange", "err", err)
		h.pages.Render(w, http.StatusBadGateway, "error", errorView{Title: "Sign-in failed",
			Message: "Your identity provider did not complete the sign-in. Try again."})
		return
	}
	_, _, secret, err := h.core.SignInCustomer(r.Context(), a, raw)
	if err != nil {
		if ce := core.As(err); ce != nil && ce.Kind != core.KindUnavailable {
			h.signInPage(w, r, http.StatusForbidden, ce.Message)
			return
		}
		h.fail(w, r, err)
		return
	}
	http.SetCookie(w, web.Cookie(sessionCookie, secret, core.SessionMaxAge))
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

// logout ends the session on every replica.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request, v *visitor) {
	if err := h.core.EndPageSession(r.Context(), v.Customer, v.session); err != nil {
		h.fail(w, r, err)
		return
	}
	http.SetCookie(w, web.Cookie(sessionCookie, "", -1))
	h.pages.Render(w, http.StatusOK, "signedout", nil)
}

type errorView struct {
	Title, Message string
}

// fail shows a core refusal, or a generic failure (the cause is logged).
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	ce := core.As(err)
	v := errorView{Title: "Something went wrong", Message: "Something went wrong on our side. Try again."}
	status := http.StatusInternalServerError
	switch {
	case ce == nil:
		h.log.ErrorContext(r.Context(), "ui: "+r.URL.Path, "err", err)
	case ce.Kind == core.KindUnavailable:
		status, v = http.StatusServiceUnavailable, errorView{Title: "Try again", Message: ce.Message}
	case ce.Kind == core.KindForbidden:
		status, v = http.StatusForbidden, errorView{Title: "Not allowed", Message: ce.Message}
	case ce.Kind == core.KindNotFound:
		status, v = http.StatusNotFound, errorView{Title: "Not found", Message: ce.Message}
	default:
		status, v = http.StatusBadRequest, errorView{Title: "Not done", Message: ce.Message}
	}
	h.pages.Render(w, status, "error", v)
}
