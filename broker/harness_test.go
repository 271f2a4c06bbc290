package broker

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/actas/actas/config"
	"github.com/actas/actas/examples"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage/sqlstore"
)

// testIDP is an OIDC issuer on an httptest server (loopback), signing with
// go-jose directly; it counts JWKS fetches.
type testIDP struct {
	srv      *httptest.Server
	signer   jose.Signer
	jwks     []byte
	jwksHits atomic.Int64
	issuer   string
}

func newTestIDP(tb testing.TB) *testIDP {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: key, KeyID: "k1", Algorithm: "RS256", Use: "sig"}
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jwk}, nil)
	p := &testIDP{signer: signer}
	p.jwks, _ = json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk.Public()}})
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": p.issuer, "jwks_uri": p.issuer + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		p.jwksHits.Add(1)
		w.Write(p.jwks)
	})
	p.srv = httptest.NewServer(mux)
	p.issuer = p.srv.URL
	tb.Cleanup(p.srv.Close)
	return p
}

func (p *testIDP) mint(tb testing.TB, claims map[string]any) string {
	now := time.Now()
	c := map[string]any{"iss": p.issuer, "aud": "actas", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	b, _ := json.Marshal(c)
	obj, err := p.signer.Sign(b)
	if err != nil {
		tb.Fatal(err)
	}
	s, _ := obj.CompactSerialize()
	return s
}

type testEnv struct {
	srv       *Server
	h         http.Handler
	cust, sup *testIDP
	store     *sqlstore.Store
}

const testProductSecret = "product-secret-0123456789"

func newTestEnv(tb testing.TB) *testEnv {
	tb.Helper()
	cust, sup := newTestIDP(tb), newTestIDP(tb)
	cfg := &config.Config{
		Issuer: "http://127.0.0.1:1", Listen: "127.0.0.1:1", Storage: "sqlite://x", PolicyFile: "p",
		SupportIDP:   config.SupportIDP{Issuer: sup.issuer, ClientID: "actas"},
		CustomerIDPs: []config.CustomerIDP{{Issuer: cust.issuer, Audience: "actas", TenantClaim: "org_id", RoleClaim: "role"}},
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
	secrets, _ := DeriveSecrets([]byte("0123456789abcdef0123456789abcdef"))
	testAuditKey := secrets.AuditKey()
	st, err := sqlstore.Open(context.Background(), "sqlite", filepath.Join(tb.TempDir(), "actas.db"), sqlstore.Options{Migrate: true, AuditKey: testAuditKey})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	srv, err := New(context.Background(), Config{Operator: cfg, Policy: pol, Store: st, Secrets: secrets, HTTPClient: http.DefaultClient})
	if err != nil {
		tb.Fatal(err)
	}
	return &testEnv{srv: srv, h: srv.Handler(), cust: cust, sup: sup, store: st}
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
	return e.cust.mint(tb, map[string]any{"sub": "ada", "org_id": "acme", "role": "admin", "plan": "enterprise"})
}

func (e *testEnv) engineer(tb testing.TB) string {
	return e.sup.mint(tb, map[string]any{"sub": "alice", "groups": []string{"support"}})
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
		"grant_type": {grantTypeTokenExchange}, "client_id": {"cli"}, "tenant": {"acme"},
		"subject_token": {code}, "subject_token_type": {tokenTypeSupportCode},
		"actor_token": {eng}, "actor_token_type": {tokenTypeIDToken},
	}
}

func (e *testEnv) redeem(tb testing.TB, admin, eng string) string {
	w := e.post(tb, "/token", exchangeValues(e.code(tb, admin), eng))
	if w.Code != 200 {
		tb.Fatalf("exchange: %d %s", w.Code, w.Body)
	}
	var out struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal(w.Body.Bytes(), &out)
	return out.AccessToken
}

// signWithKid mints a token from p's issuer whose header names kid (and is
// signed by a fresh key).
func signWithKid(tb testing.TB, p *testIDP, kid string) string {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	b, _ := json.Marshal(map[string]any{"iss": p.issuer, "aud": "actas", "sub": "x", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
	obj, _ := signer.Sign(b)
	s, _ := obj.CompactSerialize()
	return s
}
