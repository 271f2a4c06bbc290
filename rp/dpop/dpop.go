package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Names fixed by RFC 9449.
const (
	Type       = "dpop+jwt" // the JWS typ of a proof (§4.2)
	HeaderName = "DPoP"     // the request header carrying a proof (§4.1)
	Scheme     = "DPoP"     // the Authorization scheme of a bound token (§7.1)
	TokenType  = "DPoP"     // token_type of a bound token (§5)
)

// Algorithms are the asymmetric JWS algorithms a proof may use (§4.3:
// never none, never a MAC). Anything else is refused before parsing.
var Algorithms = []jose.SignatureAlgorithm{
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
	jose.PS256, jose.PS384, jose.PS512, jose.RS256, jose.RS384, jose.RS512,
}

// Defaults for Expect.
const (
	DefaultMaxAge = time.Minute      // how old a proof may be
	DefaultLeeway = 30 * time.Second // how far ahead of the server's clock iat may be
	maxProofSize  = 8 << 10
)

// ErrInvalidProof is wrapped by every verification failure.
var ErrInvalidProof = errors.New("dpop: invalid proof")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidProof, fmt.Sprintf(format, args...))
}

// Expect is what a proof must match: the request it came with and, when it
// accompanies an access token, that token.
type Expect struct {
	Method      string
	URL         string // the request's absolute URL; query and fragment are ignored
	AccessToken string // "" at a token endpoint; otherwise ath must be its hash
	Now         time.Time
	MaxAge      time.Duration // 0: DefaultMaxAge
	Leeway      time.Duration // 0: DefaultLeeway
}

// Proof is a verified proof.
type Proof struct {
	JKT      string    // RFC 7638 SHA-256 thumbprint of the proof's key
	JTI      string    // the proof's identifier, for replay detection
	IssuedAt time.Time // iat
	// Expiry is when the proof stops being acceptable by age: a replay
	// store must remember JTI at least until then.
	Expiry time.Time
}

// claims of a proof (§4.2).
type claims struct {
	JTI string   `json:"jti"`
	HTM string   `json:"htm"`
	HTU string   `json:"htu"`
	IAT *float64 `json:"iat"`
	ATH string   `json:"ath"`
}

// Verify checks a proof as RFC 9449 §4.3 says, except replay (the caller
// records Proof.JTI until Proof.Expiry) and server nonces (not used).
func Verify(proof string, e Expect) (*Proof, error) {
	if e.MaxAge == 0 {
		e.MaxAge = DefaultMaxAge
	}
	if e.Leeway == 0 {
		e.Leeway = DefaultLeeway
	}
	if proof == "" {
		return nil, invalid("empty proof")
	}
	if len(proof) > maxProofSize {
		return nil, invalid("proof is larger than %d bytes", maxProofSize)
	}
	jws, err := jose.ParseSignedCompact(proof, Algorithms)
	if err != nil {
		return nil, invalid("not a JWS with an allowed asymmetric algorithm")
	}
	if len(jws.Signatures) != 1 {
		return nil, invalid("a proof has exactly one signature")
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != Type {
		return nil, invalid("typ must be %q", Type)
	}
	jwk := h.JSONWebKey
	if jwk == nil {
		return nil, invalid("the jwk header is missing")
	}
	if !jwk.IsPublic() || !jwk.Valid() {
		return nil, invalid("the jwk header must be a valid public key")
	}
	payload, err := jws.Verify(jwk)
	if err != nil {
		return nil, invalid("the signature does not verify with the jwk header")
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, invalid("the claims are not a JSON object")
	}
	switch {
	case c.JTI == "" || len(c.JTI) > 256:
		return nil, invalid("jti is missing or longer than 256 bytes")
	case c.HTM == "":
		return nil, invalid("htm is missing")
	case c.HTU == "":
		return nil, invalid("htu is missing")
	case c.IAT == nil:
		return nil, invalid("iat is missing")
	}
	if c.HTM != e.Method {
		return nil, invalid("htm %q does not match the request method", c.HTM)
	}
	want, err1 := NormalizeURL(e.URL)
	got, err2 := NormalizeURL(c.HTU)
	if err1 != nil || err2 != nil || got != want {
		return nil, invalid("htu does not match the request URL")
	}
	iat := time.Unix(int64(*c.IAT), 0)
	if iat.Before(e.Now.Add(-e.MaxAge)) {
		return nil, invalid("the proof is too old (iat more than %s ago)", e.MaxAge)
	}
	if iat.After(e.Now.Add(e.Leeway)) {
		return nil, invalid("iat is in the future")
	}
	if e.AccessToken != "" {
		if c.ATH == "" {
			return nil, invalid("ath is missing")
		}
		if subtle.ConstantTimeCompare([]byte(c.ATH), []byte(ATH(e.AccessToken))) != 1 {
			return nil, invalid("ath does not match the access token")
		}
	}
	jkt, err := Thumbprint(jwk)
	if err != nil {
		return nil, invalid("the jwk header cannot be thumbprinted")
	}
	return &Proof{JKT: jkt, JTI: c.JTI, IssuedAt: iat, Expiry: iat.Add(e.MaxAge)}, nil
}

// FromRequest returns the request's one DPoP header: none is "", more than
// one is an error (§4.3 check 1).
func FromRequest(r *http.Request) (string, error) {
	v := r.Header.Values(HeaderName)
	switch {
	case len(v) == 0:
		return "", nil
	case len(v) > 1:
		return "", invalid("more than one DPoP header")
	case v[0] == "":
		return "", invalid("empty DPoP header")
	}
	return v[0], nil
}

// NormalizeURL reduces an absolute http(s) URL to what htu is compared on
// (§4.3 check 9, RFC 3986 §6.2.2 and §6.2.3): scheme and host lower-case,
// default port dropped, empty path "/", no query, no fragment.
func NormalizeURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" || u.Host == "" || u.User != nil {
		return "", errors.New("dpop: htu must be an absolute http(s) URL")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, nil
}

// ATH is the ath claim for an access token: base64url(SHA-256(token)).
func ATH(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint of a key, base64url: the
// value of cnf.jkt (§6.1).
func Thumbprint(k *jose.JSONWebKey) (string, error) {
	sum, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// Key is a client's proof key: ES256 on P-256.
type Key struct {
	jwk jose.JSONWebKey
	sig jose.Signer
}

// NewKey generates a fresh key.
func NewKey() (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return keyFrom(jose.JSONWebKey{Key: priv, Algorithm: string(jose.ES256)})
}

// ParseKey reads a key written by Key.MarshalJSON.
func ParseKey(b []byte) (*Key, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("dpop: reading key: %w", err)
	}
	if _, ok := jwk.Key.(*ecdsa.PrivateKey); !ok {
		return nil, errors.New("dpop: key is not an EC private key")
	}
	jwk.Algorithm = string(jose.ES256)
	return keyFrom(jwk)
}

func keyFrom(jwk jose.JSONWebKey) (*Key, error) {
	opts := (&jose.SignerOptions{EmbedJWK: true}).WithType(Type)
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jwk.Key}, opts)
	if err != nil {
		return nil, err
	}
	return &Key{jwk: jwk, sig: sig}, nil
}

// MarshalJSON writes the private key as a JWK.
func (k *Key) MarshalJSON() ([]byte, error) { return k.jwk.MarshalJSON() }

// Thumbprint is the key's jkt.
func (k *Key) Thumbprint() string {
	pub := k.jwk.Public()
	t, _ := Thumbprint(&pub) // an EC public key always thumbprints
	return t
}

// Proof makes a proof for one request; accessToken "" for a token request.
func (k *Key) Proof(method, rawURL, accessToken string, now time.Time) (string, error) {
	htu, err := NormalizeURL(rawURL)
	if err != nil {
		return "", err
	}
	jti := make([]byte, 16)
	rand.Read(jti)
	c := map[string]any{"jti": base64.RawURLEncoding.EncodeToString(jti), "htm": method, "htu": htu, "iat": now.Unix()}
	if accessToken != "" {
		c["ath"] = ATH(accessToken)
	}
	payload, _ := json.Marshal(c)
	obj, err := k.sig.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}
