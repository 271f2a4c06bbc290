package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/actas/actas/config"
)

// devIDP is a minimal OIDC issuer for the demo and the no-config dev
// setup: discovery and JWKS on a loopback port, and ID tokens minted in
// process. It exists only inside this command; no configuration key can
// enable it in a real deployment.
type devIDP struct {
	issuer string
	signer jose.Signer
	jwks   []byte
	srv    *http.Server
	done   chan struct{}
}

func startDevIDP() (*devIDP, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		ln.Close()
		return nil, err
	}
	jwk := jose.JSONWebKey{Key: key, KeyID: "dev-1", Algorithm: "RS256", Use: "sig"}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jwk},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		ln.Close()
		return nil, err
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk.Public()}})
	d := &devIDP{issuer: "http://" + ln.Addr().String(), signer: signer, jwks: jwks, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": d.issuer, "jwks_uri": d.issuer + "/jwks",
			"authorization_endpoint": d.issuer + "/authorize", "token_endpoint": d.issuer + "/token",
			"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(d.jwks)
	})
	d.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(d.done)
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener failed: requests to it fail and say so
		}
	}()
	return d, nil
}

// mint signs an ID token for aud with the given extra claims.
func (d *devIDP) mint(sub, aud string, ttl time.Duration, extra map[string]any) string {
	now := time.Now()
	c := map[string]any{"iss": d.issuer, "sub": sub, "aud": aud, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	for k, v := range extra {
		c[k] = v
	}
	payload, _ := json.Marshal(c)
	obj, err := d.signer.Sign(payload)
	if err != nil {
		panic(err)
	}
	tok, _ := obj.CompactSerialize()
	return tok
}

func (d *devIDP) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.srv.Shutdown(ctx)
	<-d.done
}

// devEnv is a loopback dev setup: two dev IdPs and a config that trusts them.
type devEnv struct {
	customer, support *devIDP
	cfg               *config.Config
	productSecret     string
}

const (
	devCLIClient     = "actas-cli"
	devProductClient = "product"
	devAudience      = "product"
)

func newDevEnv(listen, storage string) (*devEnv, error) {
	cust, err := startDevIDP()
	if err != nil {
		return nil, err
	}
	sup, err := startDevIDP()
	if err != nil {
		cust.Close()
		return nil, err
	}
	secret := randomSecret()
	cfg := &config.Config{
		Issuer: "http://" + listen, Listen: listen, Storage: storage, PolicyFile: "(built-in sample policy)",
		SupportIDP:   config.SupportIDP{Issuer: sup.issuer, ClientID: "actas", GroupsClaim: "groups"},
		CustomerIDPs: []config.CustomerIDP{{Issuer: cust.issuer, Audience: "actas", TenantClaim: "org_id", RoleClaim: "role"}},
		Clients: []config.Client{
			{ID: devCLIClient, Audience: devAudience},
			{ID: devProductClient, SecretEnv: "(generated)", Secret: secret, Audience: devAudience, CanIntrospect: true},
		},
	}
	cfg.SetDefaults()
	if probs := cfg.Validate(func(string) string { return "" }); len(probs) > 0 {
		cust.Close()
		sup.Close()
		return nil, errors.New("dev config: " + probs[0])
	}
	return &devEnv{customer: cust, support: sup, cfg: cfg, productSecret: secret}, nil
}

func (e *devEnv) Close() {
	e.customer.Close()
	e.support.Close()
}

func randomSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
