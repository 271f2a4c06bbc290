package broker

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/actas/actas/broker/oauth"
	"github.com/actas/actas/broker/secrets"
	"github.com/actas/actas/config"
	"github.com/actas/actas/examples"
	"github.com/actas/actas/internal/testidp"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage/sqlstore"
)

type testEnv struct {
	srv       *Server
	h         http.Handler
	cust, sup *testidp.IDP
	store     *sqlstore.Store
	secrets   secrets.Keys
	// clock is the server's clock; a test may replace it.
	clock func() time.Time
}

const testProductSecret = "product-secret-0123456789"

func newTestEnv(tb testing.TB) *testEnv {
	tb.Helper()
	cust, sup := testidp.New(tb), testidp.New(tb)
	cfg := &config.Config{
		Issuer: "http://127.0.0.1:1", Listen: "127.0.0.1:1", Storage: "sqlite://x", PolicyFile: "p",
		SupportIDP:   config.SupportIDP{Issuer: sup.Issuer, ClientID: "actas"},
		CustomerIDPs: []config.CustomerIDP{{Issuer: cust.Issuer, Audience: "actas", TenantClaim: "org_id", RoleClaim: "role"}},
		Clients: []config.Client{
			{ID: "cli", Audience: "product"},
			{ID: "product", SecretEnv: "X", Secret: testProductSecret, Audience: "product", CanIntrospect: true},
		},
	}
	cfg.SetDefaults()
	if probs := cfg.Validate(func(string) string { return "" }); len(probs) > 0 {
		tb.Fatal(probs)
	}
	pol, err := policy.Parse("policy.yaml", examples.Policy)
	if err != nil {
		tb.Fatal(err)
	}
	keys, _ := secrets.Derive([]byte("0123456789abcdef0123456789abcdef"))
	testAuditKey := keys.AuditKey()
	st, err := sqlstore.Open(context.Background(), "sqlite", filepath.Join(tb.TempDir(), "actas.db"), sqlstore.Options{Migrate: true, AuditKey: testAuditKey})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	e := &testEnv{cust: cust, sup: sup, store: st, secrets: keys, clock: time.Now}
	srv, err := New(context.Background(), Config{Operator: cfg, Policy: pol, Store: st, Secrets: keys, HTTPClient: http.DefaultClient,
		Now: func() time.Time { return e.clock() }})
	if err != nil {
		tb.Fatal(err)
	}
	e.srv, e.h = srv, srv.Handler()
	return e
}

func (e *testEnv) do(tb testing.TB, req *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	return w
}

func (e *testEnv) api(tb testing.TB, method, path, bearer, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+bearer)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return e.do(tb, req)
}

func (e *testEnv) post(tb testing.TB, path string, f url.Values, basic ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if len(basic) == 2 {
		req.SetBasicAuth(basic[0], basic[1])
	}
	return e.do(tb, req)
}

func (e *testEnv) admin(tb testing.TB) string {
	return e.cust.Mint(tb, map[string]any{"sub": "ada", "org_id": "acme", "role": "admin", "plan": "enterprise"})
}

func (e *testEnv) engineer(tb testing.TB) string {
	return e.sup.Mint(tb, map[string]any{"sub": "alice", "groups": []string{"support"}})
}

func (e *testEnv) enable(tb testing.TB, admin string) {
	if w := e.api(tb, "PUT", "/api/v1/tenants/acme/support-access", admin, `{"enabled":true}`); w.Code != 200 {
		tb.Fatalf("enable: %d %s", w.Code, w.Body)
	}
}

func (e *testEnv) code(tb testing.TB, admin string) string {
	w := e.api(tb, "POST", "/api/v1/tenants/acme/grants", admin, `{"role":"manage","environments":["sandbox"],"expires_in":86400}`)
	if w.Code != 201 {
		tb.Fatalf("grant: %d %s", w.Code, w.Body)
	}
	var out struct{ Code string }
	json.Unmarshal(w.Body.Bytes(), &out)
	return out.Code
}

func exchangeValues(code, eng string) url.Values {
	return url.Values{
		"grant_type": {oauth.GrantTypeTokenExchange}, "client_id": {"cli"}, "tenant": {"acme"},
		"subject_token": {code}, "subject_token_type": {oauth.TokenTypeSupportCode},
		"actor_token": {eng}, "actor_token_type": {oauth.TokenTypeIDToken},
	}
}

func (e *testEnv) redeem(tb testing.TB, admin, eng string) string {
	access, _ := e.exchange(tb, admin, eng)
	return access
}

// exchange redeems a new code as eng and returns the tokens issued.
func (e *testEnv) exchange(tb testing.TB, admin, eng string) (access, refresh string) {
	w := e.post(tb, "/token", exchangeValues(e.code(tb, admin), eng))
	if w.Code != 200 {
		tb.Fatalf("exchange: %d %s", w.Code, w.Body)
	}
	var out struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	json.Unmarshal(w.Body.Bytes(), &out)
	return out.AccessToken, out.RefreshToken
}
