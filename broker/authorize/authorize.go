package authorize

import (
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/upstream"
	"github.com/actas/actas/broker/web"
	"github.com/actas/actas/config"
	"github.com/actas/actas/storage"
)

// Cookie names. __Host- cookies are Secure, host-only and Path=/; browsers
// accept Secure cookies from http://127.0.0.1 and localhost too.
const (
	sessionCookie = "__Host-actas_op_session"
	// requestCookie is suffixed with the request's ID, so that sign-ins
	// in two tabs do not overwrite each other's binding.
	requestCookie = "__Host-actas_authz_"
)

// Handler serves the OpenID Provider's browser endpoints.
type Handler struct {
	core     *core.Service
	clients  map[string]config.Client
	issuer   string
	upstream *upstream.SignIn
	pages    *pages
	log      *slog.Logger
}

// New builds the surface; client is what reaches the support IdP.
func New(svc *core.Service, op *config.Config, client *http.Client, log *slog.Logger) *Handler {
	h := &Handler{core: svc, clients: map[string]config.Client{}, issuer: op.Issuer, log: log, pages: newPages(),
		upstream: upstream.SupportSignIn(op.SupportIDP, op.Issuer+"/authorize/callback", client)}
	for _, c := range op.Clients {
		h.clients[c.ID] = c
	}
	return h
}

// Mount adds the routes to r. Every form POST is refused when it comes
// from another origin (Fetch metadata and Origin, http.CrossOriginProtection).
func (h *Handler) Mount(r *mux.Router) {
	cop := http.NewCrossOriginProtection()
	r.HandleFunc("/authorize", h.authorize).Methods(http.MethodGet, http.MethodPost)
	r.HandleFunc("/authorize/callback", h.callback).Methods(http.MethodGet)
	r.HandleFunc("/authorize/continue", h.choose).Methods(http.MethodGet)
	r.Handle("/authorize/continue", cop.Handler(http.HandlerFunc(h.chosen))).Methods(http.MethodPost)
	r.Handle("/authorize/confirm", cop.Handler(http.HandlerFunc(h.confirm))).Methods(http.MethodPost)
	r.HandleFunc("/logout", h.logout).Methods(http.MethodGet)
	r.Handle("/logout", cop.Handler(http.HandlerFunc(h.logout))).Methods(http.MethodPost)
}

// authorize validates an OIDC Core §3.1.2.1 authentication request. Until
// client_id and redirect_uri are known good, errors are shown to the user
// and never redirected (RFC 6749 §4.1.2.1: no open redirector); after,
// they go back to the client.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		h.pages.fail(w, r, http.StatusBadRequest, "This sign-in request is malformed.")
		return
	}
	p := r.Form
	for _, k := range []string{"client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge", "code_challenge_method", "prompt", "max_age"} {
		if len(p[k]) > 1 { // RFC 6749 §3.1: parameters must not repeat
			h.pages.fail(w, r, http.StatusBadRequest, "The parameter "+k+" is repeated in this sign-in request.")
			return
		}
	}
	cl, ok := h.clients[p.Get("client_id")]
	if !ok || len(cl.RedirectURIs) == 0 {
		h.pages.fail(w, r, http.StatusBadRequest, "The product that sent you here is not registered for sign-in with actas (unknown client_id).")
		return
	}
	redirect := p.Get("redirect_uri")
	if !slices.Contains(cl.RedirectURIs, redirect) { // exact match, OIDC Core §3.1.2.1
		h.pages.fail(w, r, http.StatusBadRequest, "The product asked to return you to an address it has not registered (redirect_uri). You were not sent there.")
		return
	}
	back := func(code, desc string) { h.redirectError(w, r, redirect, p.Get("state"), code, desc) }
	scope := p.Get("scope")
	maxAge := -1
	switch {
	case p.Has("request"), p.Has("request_uri"):
		back("request_not_supported", "request objects are not supported")
		return
	case p.Get("response_type") != "code":
		back("unsupported_response_type", "response_type must be code")
		return
	case !slices.Contains(strings.Fields(scope), "openid"):
		back("invalid_scope", "scope must include openid")
		return
	case p.Get("code_challenge") == "":
		back("invalid_request", "code_challenge is required (PKCE, S256) for every client")
		return
	case p.Get("code_challenge_method") != "S256":
		back("invalid_request", "code_challenge_method must be S256")
		return
	case !challengeOK(p.Get("code_challenge")):
		back("invalid_request", "code_challenge must be the base64url SHA-256 of the verifier (43 characters)")
		return
	case len(p.Get("state")) > 512 || len(p.Get("nonce")) > 512 || len(scope) > 1024:
		back("invalid_request", "state, nonce or scope is too long")
		return
	case p.Has("max_age"):
		n, err := strconv.Atoi(p.Get("max_age"))
		if err != nil || n < 0 {
			back("invalid_request", "max_age must be a non-negative number of seconds")
			return
		}
		maxAge = n
	}
	prompts := strings.Fields(p.Get("prompt"))
	for _, pr := range prompts {
		if !slices.Contains([]string{"none", "login", "consent", "select_account"}, pr) {
			back("invalid_request", "unknown prompt value "+strconv.Quote(pr))
			return
		}
	}
	if slices.Contains(prompts, "none") {
		if len(prompts) > 1 {
			back("invalid_request", "prompt=none cannot be combined with other values")
			return
		}
		// Acting as a customer always needs the engineer's confirmation.
		if _, err := h.session(r); err != nil {
			back("login_required", "the engineer is not signed in at actas")
		} else {
			back("interaction_required", "acting as a customer needs the engineer's confirmation")
		}
		return
	}
	a, browser, err := h.core.NewAuthRequest(r.Context(), storage.AuthRequest{
		ClientID: cl.ID, RedirectURI: redirect, Scope: scope, State: p.Get("state"), Nonce: p.Get("nonce"),
		CodeChallenge: p.Get("code_challenge"), Prompt: p.Get("prompt"), MaxAge: maxAge,
	})
	if err != nil {
		h.pages.failErr(w, r, err)
		return
	}
	http.SetCookie(w, web.Cookie(requestCookie+a.ID, browser, core.AuthRequestTTL))
	if sess, err := h.session(r); err == nil && !slices.Contains(prompts, "login") && (maxAge < 0 || h.core.Now().Sub(sess.AuthTime) <= time.Duration(maxAge)*time.Second) {
		http.Redirect(w, r, "/authorize/continue?req="+url.QueryEscape(a.ID), http.StatusSeeOther)
		return
	}
	h.toUpstream(w, r, a, slices.Contains(prompts, "login"))
}

// toUpstream sends the browser to the support IdP to sign in.
func (h *Handler) toUpstream(w http.ResponseWriter, r *http.Request, a storage.AuthRequest, forceLogin bool) {
	u, err := h.upstream.AuthURL(r.Context(), a, forceLogin)
	if err != nil {
		h.log.ErrorContext(r.Context(), "authorize: support IdP", "err", err)
		h.pages.fail(w, r, http.StatusServiceUnavailable, "The support identity provider cannot be reached. Try again in a moment.")
		return
	}
	http.Redirect(w, r, u, http.StatusFound)
}

// callback is the support IdP's redirect back (RFC 6749 §4.1.2): state is
// the request's ID, which only the browser that started it can use.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	a, err := h.request(r, q.Get("state"))
	if err != nil {
		h.pages.failErr(w, r, err)
		return
	}
	if e := q.Get("error"); e != "" {
		h.log.InfoContext(r.Context(), "authorize: support IdP refused the sign-in", "error", e, "description", q.Get("error_description"))
		h.redirectError(w, r, a.RedirectURI, a.State, "access_denied", "the engineer did not sign in at the support identity provider")
		return
	}
	raw, err := h.upstream.Exchange(r.Context(), a, q.Get("code"))
	if err != nil {
		h.log.WarnContext(r.Context(), "authorize: support IdP code exchange", "err", err)
		h.pages.fail(w, r, http.StatusBadGateway, "The support identity provider did not complete your sign-in. Start again from the product.")
		return
	}
	sess, secret, err := h.core.SignInEngineer(r.Context(), a, raw)
	if ce := core.As(err); ce != nil && ce.Kind == core.KindDenied {
		h.pages.refused(w, r, a, ce.Message, h.errorURL(a.RedirectURI, a.State, "access_denied", "the policy refused this engineer"))
		return
	}
	if err != nil {
		h.pages.failErr(w, r, err)
		return
	}
	http.SetCookie(w, web.Cookie(sessionCookie, secret, core.SessionMaxAge))
	// The product asked for a fresh sign-in (prompt=login, max_age): if
	// the support IdP did not re-authenticate, say so rather than pretend
	// (OIDC Core §3.1.2.1).
	skew := h.core.ClockSkew()
	stale := a.MaxAge >= 0 && h.core.Now().Sub(sess.AuthTime) > time.Duration(a.MaxAge)*time.Second+skew
	if stale || slices.Contains(strings.Fields(a.Prompt), "login") && sess.AuthTime.Before(a.CreatedAt.Add(-skew)) {
		h.redirectError(w, r, a.RedirectURI, a.State, "login_required", "the support identity provider did not sign the engineer in again")
		return
	}
	http.Redirect(w, r, "/authorize/continue?req="+url.QueryEscape(a.ID), http.StatusSeeOther)
}

// request returns the authorization request id, if this browser started it.
func (h *Handler) request(r *http.Request, id string) (storage.AuthRequest, error) {
	c, err := r.Cookie(requestCookie + id)
	if err != nil {
		return storage.AuthRequest{}, core.ErrAuthRequest
	}
	a, err := h.core.AuthRequest(r.Context(), id, c.Value)
	if err == nil && a.ClientID == "" {
		return storage.AuthRequest{}, core.ErrAuthRequest // a customer's sign-in, not a client's request
	}
	return a, err
}

// session returns the engineer's live session, from its cookie.
func (h *Handler) session(r *http.Request) (storage.Session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return storage.Session{}, errors.New("no session cookie")
	}
	return h.core.Session(r.Context(), storage.SessionEngineer, c.Value)
}

// errorURL is redirect with an RFC 6749 §4.1.2.1 error and the RFC 9207
// iss parameter.
func (h *Handler) errorURL(redirect, state, code, desc string) string {
	v := url.Values{"error": {code}, "error_description": {desc}, "iss": {h.issuer}}
	if state != "" {
		v.Set("state", state)
	}
	return withQuery(redirect, v)
}

func (h *Handler) redirectError(w http.ResponseWriter, r *http.Request, redirect, state, code, desc string) {
	http.Redirect(w, r, h.errorURL(redirect, state, code, desc), http.StatusFound)
}

// withQuery adds v to u's query, keeping what u has (RFC 6749 §3.1.2).
func withQuery(u string, v url.Values) string {
	pu, err := url.Parse(u)
	if err != nil {
		return u
	}
	q := pu.Query()
	for k, vs := range v {
		q[k] = vs
	}
	pu.RawQuery = q.Encode()
	return pu.String()
}

// challengeOK checks an S256 challenge: 43 base64url characters.
func challengeOK(c string) bool {
	if len(c) != 43 {
		return false
	}
	for i := 0; i < len(c); i++ {
		ch := c[i]
		if !(ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return false
		}
	}
	return true
}
