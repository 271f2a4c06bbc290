package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/internal/boundcache"
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
	// idTokens makes Verify accept only ID tokens (actor tokens).
	idTokens bool
	fetches  *prometheus.CounterVec
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
	ks := &cooldownKeySet{url: meta.JWKSURI, client: u.client, now: u.now, cooldown: u.cooldown,
		verified: boundcache.New[[32]byte, verifiedPayload](4096)}
	if u.fetches != nil {
		ks.fetched = func(err error) {
			result := "ok"
			if err != nil {
				result = "error"
			}
			u.fetches.WithLabelValues(u.issuer, result).Inc()
		}
	}
	u.verifier = oidc.NewVerifier(u.issuer, ks, &oidc.Config{
		ClientID:             u.clientID,
		SupportedSigningAlgs: upstreamAlgs,
		Now:                  u.now,
	})
	return u.verifier, nil
}

// IDTokensOnly makes Verify accept nothing but OIDC ID tokens, checked as
// OIDC Core §3.1.3.7 says: an azp, when present or when aud lists several
// audiences, must be this client; iat is required; and a JWT typed as
// anything but a plain JWT (an RFC 9068 at+jwt access token, say) is
// refused. It returns u.
func (u *Issuer) IDTokensOnly() *Issuer {
	u.idTokens = true
	return u
}

// CountFetches counts JWKS fetches in cv, labelled issuer and result
// (ok, error). It returns u.
func (u *Issuer) CountFetches(cv *prometheus.CounterVec) *Issuer {
	u.fetches = cv
	return u
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
	if tok.Subject == "" {
		return core.Identity{}, errors.New("the token has no subject (sub)")
	}
	if u.idTokens {
		if err := u.checkIDToken(raw, tok, all); err != nil {
			return core.Identity{}, err
		}
	}
	return core.Identity{Subject: tok.Subject, Issuer: tok.Issuer, Claims: all}, nil
}

// checkIDToken applies the ID token checks go-oidc leaves to the client
// (OIDC Core §3.1.3.7 items 4, 5 and 10) and refuses other JWT types.
func (u *Issuer) checkIDToken(raw string, tok *oidc.IDToken, all map[string]any) error {
	// The signature verified (go-oidc): only the header's typ is read.
	head, _, ok := strings.Cut(raw, ".")
	var h map[string]any
	b, err := base64.RawURLEncoding.DecodeString(head)
	if !ok || err != nil || json.Unmarshal(b, &h) != nil {
		return errors.New("malformed token")
	}
	if typ, ok := h["typ"]; ok {
		t, _ := typ.(string)
		if !strings.EqualFold(t, "JWT") && !strings.EqualFold(t, "application/jwt") {
			return fmt.Errorf("a token of type %q is not an ID token", t)
		}
	}
	azp, hasAZP := all["azp"]
	switch {
	case hasAZP && azp != u.clientID:
		return errors.New("the token was issued to another client (azp)")
	case !hasAZP && len(tok.Audience) > 1:
		return errors.New("an ID token for several audiences must name its client (azp)")
	}
	if _, ok := all["iat"].(float64); !ok {
		return errors.New("the token has no issue time (iat)")
	}
	return nil
}

// cooldownKeySet is an oidc.KeySet that refetches the JWKS on an unknown
// kid at most once per cooldown. go-oidc's RemoteKeySet refetches on every
// unknown kid, which lets forged tokens turn into a request flood upstream.
type cooldownKeySet struct {
	url      string
	client   *http.Client
	now      func() time.Time
	cooldown time.Duration

	fetched func(error) // optional: counts fetches

	mu        sync.Mutex
	keys      []jose.JSONWebKey
	gen       uint64 // counts the key sets fetched
	lastFetch time.Time

	// verified remembers the payloads of tokens whose signature verified,
	// by the token's SHA-256, with the key set they verified against: a
	// pure result, like claims.KeySet's cache. An engineer's CLI sends the
	// same ID token with every exchange until it expires; go-oidc still
	// checks issuer, audience and times on every call.
	verified *boundcache.Cache[[32]byte, verifiedPayload]
}

type verifiedPayload struct {
	gen     uint64
	payload []byte
}

func joseAlgs() []jose.SignatureAlgorithm {
	algs := make([]jose.SignatureAlgorithm, len(upstreamAlgs))
	for i, a := range upstreamAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	return algs
}

func (k *cooldownKeySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	sum := sha256.Sum256([]byte(raw))
	k.mu.Lock()
	gen := k.gen
	k.mu.Unlock()
	if v, ok := k.verified.Get(sum); ok && v.gen == gen {
		return v.payload, nil
	}
	payload, gen, err := k.verify(ctx, raw)
	if err == nil {
		k.verified.Put(sum, verifiedPayload{gen, payload})
	}
	return payload, err
}

// verify checks raw's signature against the issuer's keys and returns its
// payload and the generation of the key set it verified against.
func (k *cooldownKeySet) verify(ctx context.Context, raw string) ([]byte, uint64, error) {
	jws, err := jose.ParseSignedCompact(raw, joseAlgs())
	if err != nil {
		return nil, 0, fmt.Errorf("malformed token: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, 0, errors.New("token must carry exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	keys, gen, err := k.keysFor(ctx, kid)
	if err != nil {
		return nil, 0, err
	}
	for _, key := range keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(&key); err == nil {
			return payload, gen, nil
		}
	}
	return nil, 0, errors.New("signature does not verify with the issuer's keys")
}

// keysFor returns the cached keys, refreshing them first when kid is not
// among them and the cooldown has passed.
func (k *cooldownKeySet) keysFor(ctx context.Context, kid string) ([]jose.JSONWebKey, uint64, error) {
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
		return k.keys, k.gen, nil
	}
	k.lastFetch = k.now()
	keys, err := k.fetch(ctx)
	if k.fetched != nil {
		k.fetched(err)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", core.ErrIdPDown, err)
	}
	k.keys = keys
	k.gen++ // what verified against the old set must verify again
	return keys, k.gen, nil
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
