// Package devidp is a minimal OIDC issuer for the actas demo, the
// config-less dev setup and the load command: discovery and JWKS on a
// loopback port, ID tokens minted in process. It is not reachable from any
// configuration key of a real deployment.
package devidp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// IDP is a running dev issuer.
type IDP struct {
	Issuer string
	signer jose.Signer
	jwks   []byte
	srv    *http.Server
	done   chan struct{}

	mu    sync.Mutex
	user  *User            // who /authorize signs in; nil: no browser sign-in
	codes map[string]grant // by code, single use
}

// User is the one person the dev issuer's /authorize signs in, at once.
type User struct {
	Sub    string
	Claims map[string]any
}

// grant is an issued authorization code.
type grant struct {
	clientID, redirectURI, challenge, nonce string
	expires                                 time.Time
}

// Start runs an issuer on a fresh loopback port with a fresh key.
func Start() (*IDP, error) { return StartAt("") }

// state is what StartAt keeps in its file.
type state struct {
	Addr string `json:"addr"`
	Key  []byte `json:"key"` // PKCS#8 DER
}

// StartAt runs an issuer whose port and key live in stateFile (created
// 0600 on first start), so that a restarted dev setup keeps its issuer URL
// and keys and every token it printed before stays valid. With stateFile
// "" both are fresh.
func StartAt(stateFile string) (*IDP, error) {
	var st state
	if stateFile != "" {
		if b, err := os.ReadFile(stateFile); err == nil {
			if json.Unmarshal(b, &st) != nil {
				return nil, fmt.Errorf("dev identity provider state %s is corrupt; delete it", stateFile)
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	var key *rsa.PrivateKey
	if len(st.Key) > 0 {
		k, err := x509.ParsePKCS8PrivateKey(st.Key)
		rk, ok := k.(*rsa.PrivateKey)
		if err != nil || !ok {
			return nil, fmt.Errorf("dev identity provider key in %s is corrupt; delete the file", stateFile)
		}
		key = rk
	} else {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, err
		}
	}
	addr := st.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dev identity provider: %w (its address is kept in %s so that issued tokens stay valid; free the port or delete the file)", err, stateFile)
	}
	if stateFile != "" && st.Addr == "" {
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		b, _ := json.Marshal(state{Addr: ln.Addr().String(), Key: der})
		if err := os.WriteFile(stateFile, b, 0o600); err != nil {
			ln.Close()
			return nil, err
		}
	}
	jwk := jose.JSONWebKey{Key: key, KeyID: "dev-1", Algorithm: "RS256", Use: "sig"}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jwk},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		ln.Close()
		return nil, err
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk.Public()}})
	d := &IDP{Issuer: "http://" + ln.Addr().String(), signer: signer, jwks: jwks, done: make(chan struct{}), codes: map[string]grant{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": d.Issuer, "jwks_uri": d.Issuer + "/jwks",
			"authorization_endpoint": d.Issuer + "/authorize", "token_endpoint": d.Issuer + "/token",
			"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"}, "code_challenge_methods_supported": []string{"S256"},
			"scopes_supported": []string{"openid", "email", "groups"}, "token_endpoint_auth_methods_supported": []string{"none"},
		})
	})
	mux.HandleFunc("GET /authorize", d.authorize)
	mux.HandleFunc("POST /token", d.token)
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

// Mint signs an ID token for aud with the given extra claims.
func (d *IDP) Mint(sub, aud string, ttl time.Duration, extra map[string]any) string {
	now := time.Now()
	c := map[string]any{"iss": d.Issuer, "sub": sub, "aud": aud, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
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

// Close stops the issuer.
func (d *IDP) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.srv.Shutdown(ctx)
	<-d.done
}
