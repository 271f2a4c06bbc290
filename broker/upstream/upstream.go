package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/actas/actas/broker/core"
)

// upstreamAlgs are the JWS algorithms accepted on upstream ID tokens.
var upstreamAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Issuer verifies tokens of one external OIDC issuer with go-oidc. The
// provider is discovered lazily, so actas starts while an IdP is down.
type Issuer struct {
	issuer   string
	clientID string
	client   *http.Client
	now      func() time.Time
	cooldown time.Duration

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
}

var _ core.Verifier = (*Issuer)(nil)

// New returns a verifier for ID tokens of issuer meant for clientID; an
// unknown kid refetches the JWKS at most once per cooldown.
func New(issuer, clientID string, client *http.Client, now func() time.Time, cooldown time.Duration) *Issuer {
	return &Issuer{issuer: issuer, clientID: clientID, client: client, now: now, cooldown: cooldown}
}

func (u *Issuer) getVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.verifier != nil {
		return u.verifier, nil
	}
	dctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, u.client), 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(dctx, u.issuer)
	if err != nil {
		return nil, fmt.Errorf("%w: discovery of %s: %v", core.ErrIdPDown, u.issuer, err)
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil || meta.JWKSURI == "" {
		return nil, fmt.Errorf("%w: %s publishes no jwks_uri", core.ErrIdPDown, u.issuer)
	}
	ks := &cooldownKeySet{url: meta.JWKSURI, client: u.client, now: u.now, cooldown: u.cooldown}
	u.verifier = oidc.NewVerifier(u.issuer, ks, &oidc.Config{
		ClientID:             u.clientID,
		SupportedSigningAlgs: upstreamAlgs,
		Now:                  u.now,
	})
	return u.verifier, nil
}

// Issuer returns the issuer URL.
func (u *Issuer) Issuer() string { return u.issuer }

// Verify checks signature, issuer, audience and expiry of an ID token and
// returns its identity and claims.
func (u *Issuer) Verify(ctx context.Context, raw string) (core.Identity, error) {
	v, err := u.getVerifier(ctx)
	if err != nil {
		return core.Identity{}, err
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return core.Identity{}, err
	}
	var all map[string]any
	if err := tok.Claims(&all); err != nil {
		return core.Identity{}, err
	}
	return core.Identity{Subject: tok.Subject, Issuer: tok.Issuer, Claims: all}, nil
}

// cooldownKeySet is an oidc.KeySet that refetches the JWKS on an unknown
// kid at most once per cooldown. go-oidc's RemoteKeySet refetches on every
// unknown kid, which lets forged tokens turn into a request flood upstream.
type cooldownKeySet struct {
	url      string
	client   *http.Client
	now      func() time.Time
	cooldown time.Duration

	mu        sync.Mutex
	keys      []jose.JSONWebKey
	lastFetch time.Time
}

func (k *cooldownKeySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	algs := make([]jose.SignatureAlgorithm, len(upstreamAlgs))
	for i, a := range upstreamAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	jws, err := jose.ParseSignedCompact(raw, algs)
	if err != nil {
		return nil, fmt.Errorf("malformed token: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("token must carry exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	keys, err := k.keysFor(ctx, kid)
	if err != nil {
		return nil, err
	}
	for _, key := range keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(&key); err == nil {
			return payload, nil
		}
	}
	return nil, errors.New("signature does not verify with the issuer's keys")
}

// keysFor returns the cached keys, refreshing them first when kid is not
// among them and the cooldown has passed.
func (k *cooldownKeySet) keysFor(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	known := false
	for _, key := range k.keys {
		if kid == "" || key.KeyID == kid {
			known = true
			break
		}
	}
	if known || (!k.lastFetch.IsZero() && k.now().Sub(k.lastFetch) < k.cooldown) {
		return k.keys, nil
	}
	k.lastFetch = k.now()
	keys, err := k.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", core.ErrIdPDown, err)
	}
	k.keys = keys
	return keys, nil
}

func (k *cooldownKeySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", k.url, resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("decoding %s: %v", k.url, err)
	}
	var out []jose.JSONWebKey
	for _, key := range set.Keys {
		if key.Use == "" || key.Use == "sig" {
			out = append(out, key)
		}
	}
	return out, nil
}
