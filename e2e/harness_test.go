// Package e2e drives the built actas binary over loopback as customers,
// engineers and products would, with upstream tokens from independent
// OIDC issuers (mockoidc, which signs with golang-jwt, not actas code).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
	"golang.org/x/oauth2"
)

var actasBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "actas-e2e-bin-")
	if err != nil {
		panic(err)
	}
	actasBin = filepath.Join(dir, "actas")
	build := exec.Command("go", "build", "-o", actasBin, "../cmd/actas")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building actas:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testUser is a mockoidc user with the claims actas reads.
type testUser struct {
	Sub    string
	OrgID  string
	Role   string
	Plan   string
	Email  string
	Groups []string
	AMR    []string
	Expire bool // mint an already expired token
}

type testClaims struct {
	*mockoidc.IDTokenClaims
	OrgID  string   `json:"org_id,omitempty"`
	Role   string   `json:"role,omitempty"`
	Plan   string   `json:"plan,omitempty"`
	Email  string   `json:"email,omitempty"`
	Groups []string `json:"groups,omitempty"`
	AMR    []string `json:"amr,omitempty"`
}

func (u *testUser) ID() string { return u.Sub }
func (u *testUser) Userinfo([]string) ([]byte, error) {
	return json.Marshal(map[string]any{"sub": u.Sub, "email": u.Email})
}
func (u *testUser) Claims(_ []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	if u.Expire {
		base.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-10 * time.Minute))
		base.IssuedAt = jwt.NewNumericDate(time.Now().Add(-20 * time.Minute))
		base.NotBefore = base.IssuedAt
	}
	return &testClaims{IDTokenClaims: base, OrgID: u.OrgID, Role: u.Role, Plan: u.Plan, Email: u.Email, Groups: u.Groups, AMR: u.AMR}, nil
}

// idp wraps a mockoidc issuer; tokens come from a real authorization-code
// flow driven by x/oauth2.
type idp struct {
	m  *mockoidc.MockOIDC
	mu sync.Mutex // mockoidc's session store is not safe for concurrent use
}

func startIDP(t *testing.T) *idp {
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	m.AddMiddleware(publicClientPKCE(m))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	m.ClientID = "actas"
	t.Cleanup(func() { m.Shutdown() })
	return &idp{m: m}
}

// publicClientPKCE lets mockoidc, which knows only confidential clients,
// serve a public client as RFC 8252 wants: a token request without a
// secret is accepted only with a PKCE verifier (which mockoidc checks
// against the challenge) and then handled as the registered client.
func publicClientPKCE(m *mockoidc.MockOIDC) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == mockoidc.TokenEndpoint {
				if err := r.ParseForm(); err == nil && r.Form.Get("client_secret") == "" {
					if r.Form.Get("grant_type") == "authorization_code" && r.Form.Get("code_verifier") == "" {
						http.Error(w, `{"error":"invalid_request","error_description":"public clients must use PKCE"}`, http.StatusBadRequest)
						return
					}
					r.Form.Set("client_secret", m.ClientSecret)
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

func (p *idp) token(t *testing.T, u *testUser) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m.QueueUser(u)
	cfg := p.m.Config()
	conf := oauth2.Config{
		ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, RedirectURL: "http://127.0.0.1/callback",
		Endpoint: oauth2.Endpoint{AuthURL: p.m.AuthorizationEndpoint(), TokenURL: p.m.TokenEndpoint()},
		Scopes:   []string{"openid", "email", "groups"},
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(conf.AuthCodeURL("state-1"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("mockoidc authorize: %s %v", resp.Status, err)
	}
	tok, err := conf.Exchange(context.Background(), loc.Query().Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := tok.Extra("id_token").(string)
	if id == "" {
		t.Fatal("mockoidc returned no id_token")
	}
	return id
}

// server is a running `actas serve`.
type server struct {
	base    string
	dir     string
	cfgPath string
	cmd     *exec.Cmd
	logs    *bytes.Buffer
	done    chan error
	env     []string
}

const (
	productSecret = "product-secret-0123456789"
	otherSecret   = "other-secret-0123456789abc"
	pgSecret      = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes, base64
)

// childEnv is this process's environment for an actas child, without the
// test suite's own ACTAS_TEST_ variables, which actas refuses as unknown
// configuration variables.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ACTAS_TEST_") {
			out = append(out, kv)
		}
	}
	return out
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// writeConfig writes actas.yaml and policy.yaml into dir.
func writeConfig(t *testing.T, dir, listen, storage string, cust, sup *idp, policy string) string {
	return writeReplicaConfig(t, dir, listen, listen, storage, cust, sup, policy)
}

// writeReplicaConfig writes a config whose issuer may differ from its
// listen address: replicas of one deployment share one issuer.
func writeReplicaConfig(t *testing.T, dir, issuer, listen, storage string, cust, sup *idp, policy string) string {
	t.Helper()
	cfg := fmt.Sprintf(`issuer: http://%s
listen: %s
storage: %s
policy_file: policy.yaml
keys:
  algorithm: ES256
support_idp:
  issuer: %s
  client_id: actas
  groups_claim: groups
customer_idps:
  - issuer: %s
    audience: actas
    tenant_claim: org_id
    role_claim: role
clients:
  - id: actas-cli
    audience: product
  - id: product
    secret_env: ACTAS_PRODUCT_SECRET
    audience: product
    can_introspect: true
  - id: other
    secret_env: ACTAS_OTHER_SECRET
    audience: other-product
    can_introspect: true
`, issuer, listen, storage, sup.m.Issuer(), cust.m.Issuer())
	p := filepath.Join(dir, "actas.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func startServer(t *testing.T, cfgPath, listen string, extraEnv ...string) *server {
	t.Helper()
	s := &server{base: "http://" + listen, dir: filepath.Dir(cfgPath), cfgPath: cfgPath, logs: &bytes.Buffer{}, done: make(chan error, 1)}
	s.env = append(childEnv(), "ACTAS_PRODUCT_SECRET="+productSecret, "ACTAS_OTHER_SECRET="+otherSecret)
	s.env = append(s.env, extraEnv...)
	s.start(t)
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("actas logs:\n%s", s.logs.String())
		}
	})
	return s
}

func (s *server) start(t *testing.T) {
	t.Helper()
	s.cmd = exec.Command(actasBin, "serve", "--config", s.cfgPath)
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.done = make(chan error, 1)
	go func(c *exec.Cmd, done chan error) { done <- c.Wait() }(s.cmd, s.done)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-s.done:
			t.Fatalf("actas exited early: %v\n%s", err, s.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("actas not ready in time:\n%s", s.logs.String())
}

// stop sends SIGTERM and expects a clean exit.
func (s *server) stop(t *testing.T) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("actas did not exit cleanly on SIGTERM: %v", err)
		}
	case <-time.After(25 * time.Second):
		s.cmd.Process.Kill()
		t.Error("actas did not stop within 25s of SIGTERM")
	}
	s.cmd = nil
}

type resp struct {
	status int
	body   map[string]any
	raw    []byte
	header http.Header
}

func (r resp) str(k string) string { s, _ := r.body[k].(string); return s }

func do(t *testing.T, req *http.Request) resp {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	checkAPIResponse(t, req, res.StatusCode, res.Header, raw)
	out := resp{status: res.StatusCode, raw: raw, header: res.Header}
	if len(raw) > 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			t.Fatalf("%s %s: response is not a JSON object: %q", req.Method, req.URL.Path, raw)
		}
	}
	return out
}

func (s *server) api(t *testing.T, method, path, bearer string, body any) resp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.base+path, rd)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return do(t, req)
}

func (s *server) form(t *testing.T, path string, f url.Values, basicUser, basicPass string) resp {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.base+path, strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicUser != "" {
		req.SetBasicAuth(basicUser, basicPass)
	}
	return do(t, req)
}

func exchangeForm(tenant, code, idToken string) url.Values {
	return url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"client_id":          {"actas-cli"},
		"tenant":             {tenant},
		"subject_token":      {code},
		"subject_token_type": {"urn:actas:params:oauth:token-type:support-code"},
		"actor_token":        {idToken},
		"actor_token_type":   {"urn:ietf:params:oauth:token-type:id_token"},
	}
}

func (s *server) exchange(t *testing.T, tenant, code, idToken string) resp {
	t.Helper()
	return s.form(t, "/token", exchangeForm(tenant, code, idToken), "", "")
}

func (s *server) introspect(t *testing.T, token string) resp {
	t.Helper()
	r := s.form(t, "/introspect", url.Values{"token": {token}}, "product", productSecret)
	if r.status != 200 {
		t.Fatalf("introspect: %d %s", r.status, r.raw)
	}
	return r
}

func (s *server) active(t *testing.T, token string) bool {
	t.Helper()
	r := s.introspect(t, token)
	if a, _ := r.body["active"].(bool); a {
		return true
	}
	if string(bytes.TrimSpace(r.raw)) != `{"active":false}` {
		t.Fatalf("inactive introspection must be exactly {\"active\":false}, got %s", r.raw)
	}
	return false
}

// enable turns support access on for the admin token's tenant.
func (s *server) enable(t *testing.T, tenant, admin string, allowNonAdmin bool) {
	t.Helper()
	r := s.api(t, "PUT", "/api/v1/tenants/"+tenant+"/support-access", admin, map[string]any{"enabled": true, "allow_non_admin_grants": allowNonAdmin})
	if r.status != 200 {
		t.Fatalf("enable: %d %s", r.status, r.raw)
	}
}

// grant creates a grant and returns its id and code.
func (s *server) grant(t *testing.T, tenant, bearer string, body map[string]any) (string, string) {
	t.Helper()
	r := s.api(t, "POST", "/api/v1/tenants/"+tenant+"/grants", bearer, body)
	if r.status != 201 {
		t.Fatalf("grant: %d %s", r.status, r.raw)
	}
	g := r.body["grant"].(map[string]any)
	return g["id"].(string), r.str("code")
}

// fixture is a running server with its two identity providers.
type fixture struct {
	*server
	cust, sup *idp
}

const testPolicy = `version: 1
roles:
  - {name: monitor, scopes: [read]}
  - {name: manage,  scopes: [read, write]}
  - {name: admin,   scopes: [read, write, admin, users:write]}
never_grant_scopes: [users:write]
grants:
  default_ttl: 24h
  max_ttl: 180d
  granter_roles: [admin]
  code: {length: 6, redeem_within: 24h, max_failures: 5}
environments:
  production: {max_ttl: 5d}
  sandbox: {}
engineers:
  require_groups: [support]
  tiers:
    - {groups: [support-l1], max_role: monitor}
tokens: {access_ttl: 15m, refresh_ttl: 12h}
rules:
  - name: no-free-plans
    deny_if: 'has(granter.claims.plan) && granter.claims.plan in ["free", "trial"]'
    message: support access is not available on free or trial plans
`

func newFixture(t *testing.T) *fixture {
	return newFixtureWith(t, testPolicy, "")
}

// newFixtureWith runs a server with policy and extra YAML appended to the
// config, which ends inside clients: (list items add clients; a top-level
// key starts a new section).
func newFixtureWith(t *testing.T, policy, extra string) *fixture {
	t.Helper()
	cust, sup := startIDP(t), startIDP(t)
	dir := t.TempDir()
	listen := freePort(t)
	cfg := writeConfig(t, dir, listen, "sqlite://"+filepath.Join(dir, "actas.db"), cust, sup, policy)
	if err := appendFile(cfg, extra); err != nil {
		t.Fatal(err)
	}
	return &fixture{server: startServer(t, cfg, listen), cust: cust, sup: sup}
}

func (f *fixture) admin(t *testing.T, tenant string) string {
	return f.cust.token(t, &testUser{Sub: "admin-of-" + tenant, OrgID: tenant, Role: "admin", Plan: "enterprise", Email: "admin@" + tenant + ".example"})
}

func (f *fixture) engineer(t *testing.T, sub string, groups ...string) string {
	if len(groups) == 0 {
		groups = []string{"support"}
	}
	return f.sup.token(t, &testUser{Sub: sub, Email: sub + "@support.example", Groups: groups})
}

func mustGet(u string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		panic(err)
	}
	return req
}
