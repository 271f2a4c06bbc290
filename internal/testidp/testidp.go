// Package testidp is an OIDC issuer for unit tests: discovery and JWKS on
// an httptest server (loopback), tokens signed with go-jose directly (not
// actas code), JWKS fetches counted.
package testidp

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// IDP is a running test issuer.
type IDP struct {
	srv      *httptest.Server
	signer   jose.Signer
	jwks     atomic.Pointer[[]byte]
	jwksHits atomic.Int64
	// Issuer is the iss of minted tokens; a test may change it to mint
	// tokens that claim another issuer.
	Issuer string
}

// New starts an issuer that stops when the test ends.
func New(tb testing.TB) *IDP {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: key, KeyID: "k1", Algorithm: "RS256", Use: "sig"}
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jwk}, nil)
	p := &IDP{signer: signer}
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk.Public()}})
	p.jwks.Store(&set)
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": p.Issuer, "jwks_uri": p.Issuer + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		p.jwksHits.Add(1)
		w.Write(*p.jwks.Load())
	})
	p.srv = httptest.NewServer(mux)
	p.Issuer = p.srv.URL
	tb.Cleanup(p.srv.Close)
	return p
}

// JWKSHits counts JWKS fetches so far.
func (p *IDP) JWKSHits() int64 { return p.jwksHits.Load() }

// Mint signs a token with iss, aud "actas", iat and exp (an hour), and
// claims, which override those.
func (p *IDP) Mint(tb testing.TB, claims map[string]any) string {
	now := time.Now()
	c := map[string]any{"iss": p.Issuer, "aud": "actas", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
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

// SignWithKid mints a token from p's issuer whose header names kid (and is
// signed by a fresh key).
func (p *IDP) SignWithKid(tb testing.TB, kid string) string {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	b, _ := json.Marshal(map[string]any{"iss": p.Issuer, "aud": "actas", "sub": "x", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
	obj, _ := signer.Sign(b)
	s, _ := obj.CompactSerialize()
	return s
}

// Rotate replaces the issuer's key with a fresh one named kid: Mint signs
// with it, and the JWKS publishes it alone. Call it between requests.
func (p *IDP) Rotate(tb testing.TB, kid string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: "RS256", Use: "sig"}
	p.signer, _ = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jwk}, nil)
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk.Public()}})
	p.jwks.Store(&set)
}
