package claims

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/actas/actas/internal/boundcache"
)

// KeySet is an immutable set of keys: one that signs, all that verify. A
// key change builds a new KeySet; readers hold the old one safely.
type KeySet struct {
	signing *Key
	signer  jose.Signer
	byID    map[string]*Key
	algs    []jose.SignatureAlgorithm
	jwks    []byte
	// cache remembers tokens whose signature and header verified against
	// this set, by SHA-256 of the exact bytes. Verifying the same bytes
	// against the same keys is a pure function, so a hit skips only the
	// signature check: issuer, audience and times are checked on every
	// call, and a new KeySet starts empty. Only verified tokens enter.
	cache *boundcache.Cache[[32]byte, *Claims]
}

// NewKeySet builds a set. signing may be nil for a verify-only set; it must
// also appear in published.
func NewKeySet(signing *Key, published []*Key) (*KeySet, error) {
	ks := &KeySet{signing: signing, byID: map[string]*Key{}, cache: boundcache.New[[32]byte, *Claims](65536)}
	seenAlg := map[string]bool{}
	doc := struct {
		Keys []jose.JSONWebKey `json:"keys"`
	}{Keys: []jose.JSONWebKey{}}
	for _, k := range published {
		if _, dup := ks.byID[k.ID]; dup {
			return nil, fmt.Errorf("claims: duplicate key id %s", k.ID)
		}
		ks.byID[k.ID] = k
		if !seenAlg[k.Algorithm] {
			seenAlg[k.Algorithm] = true
			ks.algs = append(ks.algs, jose.SignatureAlgorithm(k.Algorithm))
		}
		doc.Keys = append(doc.Keys, k.Public.Public())
	}
	if signing != nil {
		if signing.Private == nil {
			return nil, errors.New("claims: signing key has no private part")
		}
		if _, ok := ks.byID[signing.ID]; !ok {
			return nil, errors.New("claims: signing key is not published")
		}
		s, err := newSigner(signing, TokenType)
		if err != nil {
			return nil, fmt.Errorf("claims: signer: %w", err)
		}
		ks.signer = s
	}
	jwks, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	ks.jwks = jwks
	return ks, nil
}

// CheckpointType is the JWS typ of signed audit checkpoints.
const CheckpointType = "actas-checkpoint+jws"

// SETType is the JWS typ of Security Event Tokens (RFC 8417 §2.3).
const SETType = "secevent+jwt"

// SignPayload signs payload with the current key as a compact JWS of type
// CheckpointType (never an access token: its typ differs).
func (ks *KeySet) SignPayload(payload []byte) (string, error) {
	return ks.SignTyped(CheckpointType, payload)
}

// SignTyped signs payload with the current key as a compact JWS of type
// typ, which must not be TokenType: only Sign makes access tokens.
func (ks *KeySet) SignTyped(typ string, payload []byte) (string, error) {
	if ks.signing == nil {
		return "", errors.New("claims: no signing key")
	}
	if typ == TokenType {
		return "", errors.New("claims: access tokens are made by Sign")
	}
	signer, err := newSigner(ks.signing, typ)
	if err != nil {
		return "", err
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

// VerifyPayload checks a JWS made by SignPayload with this set's keys and
// returns its payload.
func (ks *KeySet) VerifyPayload(token string) ([]byte, error) {
	return ks.verifyJWS(token, func(typ string) bool { return typ == CheckpointType })
}

// VerifyTyped checks a JWS made by SignTyped(typ, ...) with this set's
// keys and returns its payload; it reads no claims.
func (ks *KeySet) VerifyTyped(token, typ string) ([]byte, error) {
	if typ == TokenType {
		return nil, ErrType
	}
	return ks.verifyJWS(token, func(t string) bool { return t == typ })
}

// newSigner signs with k, naming its kid and typ in the header.
func newSigner(k *Key, typ string) (jose.Signer, error) {
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader(jose.HeaderKey("kid"), k.ID)
	return jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Algorithm), Key: k.Private}, opts)
}

// verifyJWS is the one JWS check for everything this set verifies: the
// algorithm allow-list, exactly one signature, an accepted typ, a known
// kid whose algorithm matches the header, and the signature.
func (ks *KeySet) verifyJWS(token string, typOK func(string) bool) ([]byte, error) {
	if err := ks.checkAlg(token); err != nil {
		return nil, err
	}
	jws, err := jose.ParseSignedCompact(token, ks.algs)
	if err != nil {
		if errors.Is(err, jose.ErrUnsupportedAlgorithm) {
			return nil, ErrAlgorithm
		}
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(jws.Signatures) != 1 {
		return nil, ErrMalformed
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !typOK(typ) {
		return nil, ErrType
	}
	key, ok := ks.byID[h.KeyID]
	if !ok {
		return nil, ErrUnknownKey
	}
	if h.Algorithm != key.Algorithm {
		return nil, ErrAlgorithm
	}
	payload, err := jws.Verify(key.Public.Key)
	if err != nil {
		return nil, ErrSignature
	}
	return payload, nil
}

// checkAlg refuses a token whose header names an algorithm outside the
// key set's allow-list (none, HS256 with a public key as secret, ...).
func (ks *KeySet) checkAlg(token string) error {
	head, _, ok := strings.Cut(token, ".")
	if !ok {
		return ErrMalformed
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return ErrMalformed
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return ErrMalformed
	}
	for _, a := range ks.algs {
		if string(a) == h.Alg {
			return nil
		}
	}
	return ErrAlgorithm
}

// JWKS returns the RFC 7517 JWK Set document of the published keys.
func (ks *KeySet) JWKS() []byte { return ks.jwks }

// SigningKeyID returns the kid that signs, or "" for a verify-only set.
func (ks *KeySet) SigningKeyID() string {
	if ks.signing == nil {
		return ""
	}
	return ks.signing.ID
}

// Algorithms returns the algorithms of the published keys.
func (ks *KeySet) Algorithms() []string {
	out := make([]string, len(ks.algs))
	for i, a := range ks.algs {
		out[i] = string(a)
	}
	return out
}

// Sign validates c, marshals it once and signs the bytes.
func (ks *KeySet) Sign(c *Claims) (string, error) {
	if ks.signer == nil {
		return "", errors.New("claims: no signing key")
	}
	if err := c.Validate(); err != nil {
		return "", err
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	obj, err := ks.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("claims: signing: %w", err)
	}
	return obj.CompactSerialize()
}

// VerifyOptions are the expectations a token must meet. Issuer is always
// checked; an empty Audience is an error unless SkipAudienceCheck says so.
type VerifyOptions struct {
	Issuer            string
	Audience          string
	SkipAudienceCheck bool
	Now               time.Time
	Leeway            time.Duration
}

// Verify parses a compact JWS, allowing only the algorithms of this set,
// checks typ at+jwt, the kid, the signature, and then iss, aud, exp, nbf,
// iat and jti, all of which must be present. The returned claims are
// shared and must not be modified.
func (ks *KeySet) Verify(token string, o VerifyOptions) (*Claims, error) {
	if o.Issuer == "" || (o.Audience == "" && !o.SkipAudienceCheck) {
		return nil, errors.New("claims: verify options need an issuer and an audience")
	}
	if len(token) > 8192 {
		return nil, ErrMalformed
	}
	key := sha256.Sum256([]byte(token))
	c, ok := ks.cache.Get(key)
	if !ok {
		var err error
		if c, err = ks.verifySignature(token); err != nil {
			return nil, err
		}
		ks.cache.Put(key, c)
	}
	if c.Iss != o.Issuer {
		return nil, ErrIssuer
	}
	if !o.SkipAudienceCheck {
		found := false
		for _, a := range c.Aud {
			if a == o.Audience {
				found = true
				break
			}
		}
		if !found {
			return nil, ErrAudience
		}
	}
	if err := checkTimes(c, o.Now, o.Leeway); err != nil {
		return nil, err
	}
	return c, nil
}

// verifySignature checks everything that depends only on the token's bytes
// and this key set: algorithm, typ, kid, signature, required claims.
func (ks *KeySet) verifySignature(token string) (*Claims, error) {
	payload, err := ks.verifyJWS(token, func(typ string) bool { return typ == TokenType || typ == "application/"+TokenType })
	if err != nil {
		return nil, err
	}
	return decodeClaims(payload)
}
