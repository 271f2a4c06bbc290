package rp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/actas/actas/rp/dpop"
)

// issuer is a stand-in actas: discovery, JWKS with rotation, tokens and
// SETs signed with go-jose.
type issuer struct {
	srv      *httptest.Server
	mu       sync.Mutex
	keys     []jose.JSONWebKey // private; the last one signs
	inactive map[string]bool   // tokens /introspect calls inactive
	asked    int
	down     bool
}

func newIssuer(t testing.TB) *issuer {
	is := &issuer{inactive: map[string]bool{}}
	is.rotate(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/jwks", "token_endpoint": is.srv.URL + "/token",
			"introspection_endpoint": is.srv.URL + "/introspect"})
	})
	mux.HandleFunc("POST /introspect", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		is.asked++
		if id, secret, _ := r.BasicAuth(); id != "product" || secret != "s3cret" || is.down {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		r.ParseForm()
		json.NewEncoder(w).Encode(map[string]bool{"active": !is.inactive[r.PostForm.Get("token")]})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		var set jose.JSONWebKeySet
		for _, k := range is.keys {
			set.Keys = append(set.Keys, k.Public())
		}
		json.NewEncoder(w).Encode(set)
	})
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

func (is *issuer) rotate(t testing.TB) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = append(is.keys, jose.JSONWebKey{Key: priv, KeyID: "k" + string(rune('1'+len(is.keys))), Algorithm: "ES256", Use: "sig"})
}

func (is *issuer) sign(t testing.TB, typ string, claims map[string]any) string {
	is.mu.Lock()
	k := is.keys[len(is.keys)-1]
	is.mu.Unlock()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	obj, _ := s.Sign(b)
	out, _ := obj.CompactSerialize()
	return out
}

func (is *issuer) token(t testing.TB, over map[string]any) string {
	now := time.Now().Unix()
	c := map[string]any{"iss": is.srv.URL, "sub": "ada", "aud": []string{"product"}, "client_id": "actas-cli",
		"exp": now + 600, "iat": now, "nbf": now, "jti": "jti-1", "act": map[string]any{"sub": "alice", "iss": "https://support"},
		"tenant": "acme", "roles": []string{"manage"}, "environments": []string{"production"}, "scope": "read write",
		"grant_id": "grt_1", "grant_exp": now + 3600}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return is.sign(t, "at+jwt", c)
}

func newVerifier(t testing.TB, is *issuer) *Verifier {
	v, err := New(context.Background(), Config{Issuer: is.srv.URL, Audience: "product", PublicURL: "https://product.example"})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func serve(v *Verifier, token, scheme, proof string) *httptest.ResponseRecorder {
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := FromContext(r.Context())
		json.NewEncoder(w).Encode(id)
	}))
	req := httptest.NewRequest("GET", "https://product.example/api/x", nil)
	req.Header.Set("Authorization", scheme+" "+token)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestMiddleware(t *testing.T) {
	is := newIssuer(t)
	v := newVerifier(t, is)
	rec := serve(v, is.token(t, nil), "Bearer", "")
	var id Identity
	json.Unmarshal(rec.Body.Bytes(), &id)
	if rec.Code != 200 || id.Subject != "ada" || id.Actor.Sub != "alice" || id.Tenant != "acme" || id.GrantID != "grt_1" {
		t.Fatalf("valid token: %d %s", rec.Code, rec.Body)
	}
	now := time.Now().Unix()
	for name, tok := range map[string]string{
		"fail/other audience": is.token(t, map[string]any{"aud": "other"}),
		"fail/other issuer":   is.token(t, map[string]any{"iss": "https://evil"}),
		"fail/expired":        is.token(t, map[string]any{"exp": now - 120}),
		"fail/not yet":        is.token(t, map[string]any{"nbf": now + 600}),
		"fail/no act":         is.token(t, map[string]any{"act": nil}),
		"fail/id token typ":   is.sign(t, "JWT", map[string]any{"iss": is.srv.URL, "aud": "product", "sub": "x", "exp": now + 60, "iat": now}),
		"fail/garbage":        "a.b.c",
		"fail/alg none":       "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0." + strings.Split(is.token(t, nil), ".")[1] + ".",
	} {
		t.Run(name, func(t *testing.T) {
			if rec := serve(v, tok, "Bearer", ""); rec.Code != 401 || !strings.Contains(rec.Header().Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Fatalf("%d %v %s", rec.Code, rec.Header(), rec.Body)
			}
		})
	}
	// rotation: a token from a key published after start verifies
	is.rotate(t)
	if rec := serve(v, is.token(t, map[string]any{"jti": "after-rotation"}), "Bearer", ""); rec.Code != 200 {
		t.Fatalf("after rotation: %d %s", rec.Code, rec.Body)
	}
}

func TestPushedRevocation(t *testing.T) {
	is := newIssuer(t)
	v := newVerifier(t, is)
	tok := is.token(t, nil)
	if rec := serve(v, tok, "Bearer", ""); rec.Code != 200 {
		t.Fatal(rec.Code)
	}
	set := func(aud string, ev map[string]any) string {
		return is.sign(t, "secevent+jwt", map[string]any{"iss": is.srv.URL, "aud": aud, "jti": "set-" + aud, "iat": time.Now().Unix(),
			"events": map[string]any{EventSessionRevoked: ev}})
	}
	post := func(body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/ssf", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/secevent+jwt")
		rec := httptest.NewRecorder()
		v.Receiver().ServeHTTP(rec, req)
		return rec
	}
	if rec := post(set("other", map[string]any{"grant_id": "grt_1"})); rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_audience") {
		t.Fatalf("SET for another audience: %d %s", rec.Code, rec.Body)
	}
	if rec := post(is.token(t, nil)); rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_key") {
		t.Fatalf("an access token posted as a SET: %d %s", rec.Code, rec.Body)
	}
	if serve(v, tok, "Bearer", "").Code != 200 {
		t.Fatal("a refused SET changed something")
	}
	s := set("product", map[string]any{"grant_id": "grt_1"})
	for range 2 { // a retried delivery is accepted again
		if rec := post(s); rec.Code != 202 {
			t.Fatalf("SET: %d %s", rec.Code, rec.Body)
		}
	}
	if rec := serve(v, tok, "Bearer", ""); rec.Code != 401 {
		t.Fatalf("token of an ended grant: %d", rec.Code)
	}
	if rec := serve(v, is.token(t, map[string]any{"grant_id": "grt_2", "jti": "j2"}), "Bearer", ""); rec.Code != 200 {
		t.Fatalf("another grant: %d", rec.Code)
	}
}

func TestDPoPBoundToken(t *testing.T) {
	is := newIssuer(t)
	v := newVerifier(t, is)
	key, _ := dpop.NewKey()
	tok := is.token(t, map[string]any{"cnf": map[string]string{"jkt": key.Thumbprint()}, "jti": "bound"})
	if rec := serve(v, tok, "Bearer", ""); rec.Code != 401 {
		t.Fatalf("bound token as bearer: %d", rec.Code)
	}
	p, _ := key.Proof("GET", "https://product.example/api/x", tok, time.Now())
	if rec := serve(v, tok, "DPoP", p); rec.Code != 200 {
		t.Fatalf("with proof: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(v, tok, "DPoP", p); rec.Code != 401 || !strings.Contains(rec.Body.String(), "invalid_dpop_proof") {
		t.Fatalf("replayed proof: %d %s", rec.Code, rec.Body)
	}
	other, _ := dpop.NewKey()
	op, _ := other.Proof("GET", "https://product.example/api/x", tok, time.Now())
	if rec := serve(v, tok, "DPoP", op); rec.Code != 401 {
		t.Fatalf("proof by another key: %d", rec.Code)
	}
	wrongURL, _ := key.Proof("GET", "https://product.example/api/y", tok, time.Now())
	if rec := serve(v, tok, "DPoP", wrongURL); rec.Code != 401 {
		t.Fatalf("proof for another URL: %d", rec.Code)
	}
}

// BenchmarkMiddleware is the verification path of a request with a valid
// bearer token whose key is cached and whose signature was checked before:
// header parsing, the verified-token cache, times, revocation, context.
func BenchmarkMiddleware(b *testing.B) {
	is := newIssuer(b)
	v := newVerifier(b, is)
	tok := is.token(b, nil)
	h := v.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	req := httptest.NewRequest("GET", "https://product.example/api/x", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 {
		b.Fatal(w.Code)
	}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

// BenchmarkVerifyFirstSight is a token's first verification: the ES256
// signature check dominates.
func BenchmarkVerifyFirstSight(b *testing.B) {
	is := newIssuer(b)
	v := newVerifier(b, is)
	tok := is.token(b, nil)
	ctx := context.Background()
	for b.Loop() {
		if _, err := v.verifySigned(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func TestIntrospectionCache(t *testing.T) {
	is := newIssuer(t)
	v, err := New(context.Background(), Config{Issuer: is.srv.URL, Audience: "product",
		Introspect: &Introspect{ClientID: "product", ClientSecret: "s3cret", CacheTTL: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	tok := is.token(t, nil)
	for range 3 {
		if rec := serve(v, tok, "Bearer", ""); rec.Code != 200 {
			t.Fatalf("active: %d %s", rec.Code, rec.Body)
		}
	}
	if is.asked != 1 {
		t.Fatalf("introspected %d times within the cache TTL, want 1", is.asked)
	}
	is.mu.Lock()
	is.inactive[tok] = true
	is.mu.Unlock()
	time.Sleep(250 * time.Millisecond)
	if rec := serve(v, tok, "Bearer", ""); rec.Code != 401 {
		t.Fatalf("revoked at actas, after the TTL: %d", rec.Code)
	}
	is.mu.Lock()
	is.down = true
	is.mu.Unlock()
	if rec := serve(v, is.token(t, map[string]any{"jti": "other"}), "Bearer", ""); rec.Code != 503 {
		t.Fatalf("introspection down must refuse, never fall back to the JWT: %d", rec.Code)
	}
	if _, err := New(context.Background(), Config{Issuer: is.srv.URL, Audience: "product", Introspect: &Introspect{CacheTTL: time.Minute}}); err == nil {
		t.Fatal("a cache TTL of a minute was accepted")
	}
}
