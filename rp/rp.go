package rp

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Config says which actas and which audience to trust.
type Config struct {
	Issuer   string // actas's issuer URL
	Audience string // this product's audience: tokens for any other are refused
	// HTTPClient fetches discovery, keys and introspection; default has a 10s timeout.
	HTTPClient *http.Client
	Leeway     time.Duration // clock skew allowed on exp, nbf, iat; default 30s
	Now        func() time.Time
	// Introspect, when set, asks actas about every token (RFC 7662),
	// caching answers for at most CacheTTL: revocation on any replica is
	// seen within that time even without a push stream.
	Introspect *Introspect
	// PublicURL is this product's external base URL (scheme and host) for
	// DPoP htu checks behind a proxy; default: the request's own.
	PublicURL string
	// ReceiverAuthorization, when set, is the Authorization header value
	// pushes must carry (given to actas as the stream's authorization_header).
	ReceiverAuthorization string
}

// Introspect configures introspection.
type Introspect struct {
	ClientID, ClientSecret string
	CacheTTL               time.Duration // default 2s, at most 30s
}

// Actor is the engineer acting (RFC 8693 §4.1 act).
type Actor struct {
	Sub   string `json:"sub"`
	Iss   string `json:"iss"`
	Email string `json:"email,omitempty"`
}

// Identity is a verified actas token: who is acted as, by whom, within what.
type Identity struct {
	Subject      string
	Actor        Actor
	Tenant       string
	Roles        []string
	Environments []string
	Resources    []string
	Scope        string
	GrantID      string
	ClientID     string
	JTI          string
	JKT          string // the DPoP key the token is bound to; "" for a bearer token
	IssuedAt     time.Time
	Expiry       time.Time
	GrantExpiry  time.Time
}

// Errors of Verify; all answer 401 in the middleware.
var (
	ErrInvalidToken = errors.New("rp: invalid token")
	ErrRevoked      = errors.New("rp: the token's grant has ended")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, fmt.Sprintf(format, args...))
}

// Verifier verifies actas tokens for one audience.
type Verifier struct {
	cfg        Config
	client     *http.Client
	now        func() time.Time
	jwksURI    string
	tokenURI   string
	introspect string
	keys       *keyCache
	verified   *ttlCache[[32]byte, *Identity] // tokens whose signature checked
	revoked    *revocations
	proofs     *ttlCache[string, struct{}] // DPoP proof jti seen
	setsSeen   *ttlCache[string, struct{}] // pushed SET jti seen
	answers    *ttlCache[[32]byte, bool]   // introspection answers
	verifyMu   sync.Mutex
	lastVerify string
}

// Algorithms accepted on actas tokens and SETs.
var algorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256, jose.PS256, jose.EdDSA}

// New reads actas's discovery document and keys.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("rp: Issuer and Audience are required")
	}
	cfg.Issuer = strings.TrimRight(cfg.Issuer, "/")
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if in := cfg.Introspect; in != nil {
		if in.CacheTTL == 0 {
			in.CacheTTL = 2 * time.Second
		}
		if in.CacheTTL > 30*time.Second {
			return nil, errors.New("rp: Introspect.CacheTTL above 30s keeps revoked grants working too long")
		}
	}
	v := &Verifier{cfg: cfg, client: cfg.HTTPClient, now: cfg.Now,
		verified: newTTLCache[[32]byte, *Identity](65536), revoked: newRevocations(),
		proofs: newTTLCache[string, struct{}](1 << 20), setsSeen: newTTLCache[string, struct{}](1 << 16),
		answers: newTTLCache[[32]byte, bool](65536)}
	var meta struct {
		Issuer        string `json:"issuer"`
		JWKS          string `json:"jwks_uri"`
		Token         string `json:"token_endpoint"`
		Introspection string `json:"introspection_endpoint"`
	}
	if err := v.getJSON(ctx, cfg.Issuer+"/.well-known/openid-configuration", &meta); err != nil {
		return nil, fmt.Errorf("rp: discovery: %w", err)
	}
	if meta.Issuer != cfg.Issuer || meta.JWKS == "" {
		return nil, fmt.Errorf("rp: discovery at %s names issuer %q and jwks_uri %q", cfg.Issuer, meta.Issuer, meta.JWKS)
	}
	v.jwksURI, v.tokenURI, v.introspect = meta.JWKS, meta.Token, meta.Introspection
	v.keys = &keyCache{fetch: v.fetchKeys, now: cfg.Now}
	if err := v.keys.refresh(ctx, true); err != nil {
		return nil, fmt.Errorf("rp: keys: %w", err)
	}
	return v, nil
}

func (v *Verifier) getJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

func (v *Verifier) fetchKeys(ctx context.Context) (*jose.JSONWebKeySet, error) {
	var ks jose.JSONWebKeySet
	if err := v.getJSON(ctx, v.jwksURI, &ks); err != nil {
		return nil, err
	}
	return &ks, nil
}

// tokenClaims are an actas access token's claims.
type tokenClaims struct {
	Iss          string   `json:"iss"`
	Sub          string   `json:"sub"`
	Aud          audience `json:"aud"`
	ClientID     string   `json:"client_id"`
	Exp          *int64   `json:"exp"`
	Iat          *int64   `json:"iat"`
	Nbf          *int64   `json:"nbf"`
	Jti          string   `json:"jti"`
	Act          *Actor   `json:"act"`
	Tenant       string   `json:"tenant"`
	Roles        []string `json:"roles"`
	Environments []string `json:"environments"`
	Resources    []string `json:"resources"`
	Scope        string   `json:"scope"`
	GrantID      string   `json:"grant_id"`
	GrantExp     int64    `json:"grant_exp"`
	Cnf          *struct {
		JKT string `json:"jkt"`
	} `json:"cnf"`
}

// audience is aud as a string or an array (RFC 7519 §4.1.3).
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*a = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// Verify checks an access token: a cached verification skips only the
// signature; times and revocation are checked on every call.
func (v *Verifier) Verify(ctx context.Context, token string) (*Identity, error) {
	key := sha256.Sum256([]byte(token))
	id, ok := v.verified.get(key)
	if !ok {
		var err error
		if id, err = v.verifySigned(ctx, token); err != nil {
			return nil, err
		}
		v.verified.put(key, id, id.Expiry.Add(v.cfg.Leeway))
	}
	now := v.now()
	if !now.Before(id.Expiry.Add(v.cfg.Leeway)) {
		return nil, invalid("expired")
	}
	if v.revoked.ended(id, now) {
		return nil, ErrRevoked
	}
	return id, nil
}

func (v *Verifier) verifySigned(ctx context.Context, token string) (*Identity, error) {
	payload, err := v.verifyJWS(ctx, token, func(typ string) bool {
		return strings.EqualFold(typ, "at+jwt") || strings.EqualFold(typ, "application/at+jwt")
	})
	if err != nil {
		return nil, err
	}
	var c tokenClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, invalid("claims are not valid JSON")
	}
	now := v.now()
	switch {
	case c.Iss != v.cfg.Issuer:
		return nil, invalid("wrong issuer")
	case !slices.Contains(c.Aud, v.cfg.Audience):
		return nil, invalid("not for this audience")
	case c.Exp == nil || c.Iat == nil || c.Sub == "" || c.Jti == "":
		return nil, invalid("exp, iat, sub or jti missing")
	case !now.Before(time.Unix(*c.Exp, 0).Add(v.cfg.Leeway)):
		return nil, invalid("expired")
	case c.Nbf != nil && time.Unix(*c.Nbf, 0).After(now.Add(v.cfg.Leeway)), time.Unix(*c.Iat, 0).After(now.Add(v.cfg.Leeway)):
		return nil, invalid("not yet valid")
	case c.Act == nil || c.Act.Sub == "":
		return nil, invalid("no act claim: not an actas support token")
	}
	id := &Identity{Subject: c.Sub, Actor: *c.Act, Tenant: c.Tenant, Roles: c.Roles, Environments: c.Environments,
		Resources: c.Resources, Scope: c.Scope, GrantID: c.GrantID, ClientID: c.ClientID, JTI: c.Jti,
		IssuedAt: time.Unix(*c.Iat, 0), Expiry: time.Unix(*c.Exp, 0), GrantExpiry: time.Unix(c.GrantExp, 0)}
	if c.Cnf != nil {
		if c.Cnf.JKT == "" {
			return nil, invalid("cnf without jkt")
		}
		id.JKT = c.Cnf.JKT
	}
	return id, nil
}

// verifyJWS checks the allowed algorithms, one signature, the typ, and the
// signature with the key the kid names (refetching keys once, rate
// limited, for an unknown kid: actas rotates and pre-publishes keys).
func (v *Verifier) verifyJWS(ctx context.Context, token string, typOK func(string) bool) ([]byte, error) {
	if len(token) > 16<<10 {
		return nil, invalid("too large")
	}
	jws, err := jose.ParseSignedCompact(token, algorithms)
	if err != nil {
		return nil, invalid("not a JWS with an allowed algorithm")
	}
	if len(jws.Signatures) != 1 {
		return nil, invalid("want exactly one signature")
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !typOK(typ) {
		return nil, invalid("wrong typ %q", typ)
	}
	if h.JSONWebKey != nil || h.KeyID == "" {
		return nil, invalid("tokens must name a published key by kid")
	}
	k, err := v.keys.get(ctx, h.KeyID)
	if err != nil {
		return nil, invalid("unknown signing key")
	}
	if k.Algorithm != "" && k.Algorithm != h.Algorithm {
		return nil, invalid("algorithm does not match the key")
	}
	payload, err := jws.Verify(k)
	if err != nil {
		return nil, invalid("bad signature")
	}
	return payload, nil
}

// keyCache holds the JWKS; an unknown kid refetches at most every 10s.
type keyCache struct {
	mu      sync.RWMutex
	keys    map[string]*jose.JSONWebKey
	fetched time.Time
	fetch   func(context.Context) (*jose.JSONWebKeySet, error)
	now     func() time.Time
}

func (c *keyCache) get(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	c.mu.RLock()
	k, ok := c.keys[kid]
	c.mu.RUnlock()
	if ok {
		return k, nil
	}
	if err := c.refresh(ctx, false); err != nil {
		return nil, err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if k, ok := c.keys[kid]; ok {
		return k, nil
	}
	return nil, errors.New("unknown kid")
}

func (c *keyCache) refresh(ctx context.Context, force bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !force {
		// An unknown kid refetches at most every 10s: random kids must
		// not turn into a flood of JWKS requests. The first fetch at
		// start does not count.
		if c.now().Sub(c.fetched) < 10*time.Second {
			return nil
		}
		c.fetched = c.now()
	}
	set, err := c.fetch(ctx)
	if err != nil {
		return err
	}
	keys := map[string]*jose.JSONWebKey{}
	for i := range set.Keys {
		k := set.Keys[i]
		if k.KeyID != "" && k.IsPublic() && (k.Use == "" || k.Use == "sig") {
			keys[k.KeyID] = &k
		}
	}
	c.keys = keys
	return nil
}
