package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// product is a relying party as a product builds one with go-oidc and
// x/oauth2, nothing of actas's: it signs people in at actas, verifies ID
// tokens and back-channel logout tokens, and keeps what it got.
type product struct {
	t      *testing.T
	addr   string // 127.0.0.1:port
	secret string

	mu       sync.Mutex
	issuer   string
	provider *oidc.Provider
	flows    map[string]rpFlow // by state
	results  []rpResult
	logouts  chan rpLogout
	lastCode string
	// lastVerifier is the PKCE verifier of the last manual flow.
	lastVerifier string
}

type rpFlow struct {
	nonce, verifier string
	manual          bool // keep the code, do not exchange it
}

// rpResult is one completed sign-in.
type rpResult struct {
	Token   *oauth2.Token
	IDToken string
	Claims  map[string]any
}

// rpLogout is one verified logout token.
type rpLogout struct {
	Claims map[string]any
	At     time.Time
}

const productWebSecret = "product-web-secret-0123456789"

func startWebProduct(t *testing.T) *product {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &product{t: t, addr: ln.Addr().String(), secret: productWebSecret, flows: map[string]rpFlow{}, logouts: make(chan rpLogout, 32)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", p.login)
	mux.HandleFunc("GET /callback", p.callback)
	mux.HandleFunc("POST /bc-logout", p.backchannel)
	mux.HandleFunc("GET /bye", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "<!doctype html><title>bye</title><p>Signed out of the product. state=%s</p>", html.EscapeString(r.URL.Query().Get("state")))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}

// clientConfig is the product's entry in actas.yaml.
func (p *product) clientConfig() string {
	return fmt.Sprintf(`  - id: web
    secret_env: ACTAS_WEB_SECRET
    audience: product
    redirect_uris: [http://%[1]s/callback]
    post_logout_redirect_uris: [http://%[1]s/bye]
    backchannel_logout_uri: http://%[1]s/bc-logout
`, p.addr)
}

func (p *product) url(path string) string { return "http://" + p.addr + path }

// discover reads actas's discovery document as the product would.
func (p *product) discover(issuer string) {
	p.t.Helper()
	prov, err := oidc.NewProvider(context.Background(), issuer)
	if err != nil {
		p.t.Fatalf("product: discovery: %v", err)
	}
	p.mu.Lock()
	p.issuer, p.provider = issuer, prov
	p.mu.Unlock()
}

func (p *product) oauth() *oauth2.Config {
	return &oauth2.Config{ClientID: "web", ClientSecret: p.secret, Endpoint: p.provider.Endpoint(),
		RedirectURL: p.url("/callback"), Scopes: []string{oidc.ScopeOpenID, "read"}}
}

func (p *product) verifier() *oidc.IDTokenVerifier {
	return p.provider.Verifier(&oidc.Config{ClientID: "web"})
}

func (p *product) login(w http.ResponseWriter, r *http.Request) {
	state, nonce, verifier := oauth2.GenerateVerifier(), oauth2.GenerateVerifier(), oauth2.GenerateVerifier()
	p.mu.Lock()
	p.flows[state] = rpFlow{nonce: nonce, verifier: verifier, manual: r.URL.Query().Get("manual") != ""}
	p.mu.Unlock()
	http.Redirect(w, r, p.oauth().AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusFound)
}

func (p *product) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p.mu.Lock()
	f, ok := p.flows[q.Get("state")]
	delete(p.flows, q.Get("state"))
	p.lastCode = q.Get("code")
	p.mu.Unlock()
	switch {
	case !ok:
		http.Error(w, "unknown state", http.StatusBadRequest)
		return
	case q.Get("error") != "":
		fmt.Fprintf(w, "<!doctype html><title>refused</title><p>actas answered %s: %s</p>", html.EscapeString(q.Get("error")), html.EscapeString(q.Get("error_description")))
		return
	case q.Get("iss") != p.issuer: // RFC 9207 §2.4
		http.Error(w, "wrong iss", http.StatusBadRequest)
		return
	case f.manual:
		p.mu.Lock()
		p.lastVerifier = f.verifier
		p.mu.Unlock()
		fmt.Fprintf(w, "<!doctype html><title>code</title><p>code received</p>")
		return
	}
	tok, err := p.oauth().Exchange(r.Context(), q.Get("code"), oauth2.VerifierOption(f.verifier))
	if err != nil {
		http.Error(w, "exchange: "+err.Error(), http.StatusBadGateway)
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := p.verifier().Verify(r.Context(), raw)
	if err != nil {
		http.Error(w, "id token: "+err.Error(), http.StatusBadGateway)
		return
	}
	var c map[string]any
	idt.Claims(&c)
	if c["nonce"] != f.nonce {
		http.Error(w, "wrong nonce", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.results = append(p.results, rpResult{Token: tok, IDToken: raw, Claims: c})
	p.mu.Unlock()
	act, _ := c["act"].(map[string]any)
	fmt.Fprintf(w, "<!doctype html><title>signed in</title><p>Signed in as %s, acted for by %s.</p>",
		html.EscapeString(fmt.Sprint(c["sub"])), html.EscapeString(fmt.Sprint(act["sub"])))
}

// backchannel verifies a logout token as OIDC Back-Channel Logout 1.0
// §2.6 asks: signature, iss, aud, iat/exp (go-oidc), the events member,
// no nonce, and sub or sid.
func (p *product) backchannel(w http.ResponseWriter, r *http.Request) {
	raw := r.PostFormValue("logout_token")
	tok, err := p.verifier().Verify(r.Context(), raw)
	if err != nil {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		p.t.Errorf("product: logout token rejected: %v", err)
		return
	}
	var c map[string]any
	tok.Claims(&c)
	ev, _ := c["events"].(map[string]any)
	_, hasEvent := ev["http://schemas.openid.net/event/backchannel-logout"]
	if _, hasNonce := c["nonce"]; hasNonce || !hasEvent || (c["sub"] == nil && c["sid"] == nil) {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		p.t.Errorf("product: malformed logout token %v", c)
		return
	}
	p.logouts <- rpLogout{Claims: c, At: time.Now()}
	w.WriteHeader(http.StatusOK)
}

func (p *product) last() rpResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.results) == 0 {
		p.t.Fatal("product: no sign-in completed")
	}
	return p.results[len(p.results)-1]
}

func (p *product) code() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastCode
}

// nextLogout waits for the next verified logout token.
func (p *product) nextLogout(t *testing.T, within time.Duration) rpLogout {
	t.Helper()
	select {
	case l := <-p.logouts:
		return l
	case <-time.After(within):
		t.Fatalf("no logout token reached the product within %s", within)
	}
	return rpLogout{}
}

func claimsJSON(c map[string]any) string {
	b, _ := json.Marshal(c)
	return string(b)
}
