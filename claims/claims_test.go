package claims

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func sample() *Claims {
	return &Claims{
		Iss: "https://actas.example", Sub: "user-1", Aud: []string{"product"}, ClientID: "cli",
		Exp: now.Add(15 * time.Minute).Unix(), Iat: now.Unix(), Nbf: now.Unix(), Jti: "jti-1",
		Act: Actor{Sub: "eng", Iss: "https://support"}, Tenant: "acme", Roles: []string{"manage"},
		Environments: []string{"production"}, Scope: "read write", GrantID: "grt_1", GrantExp: now.Add(time.Hour).Unix(),
	}
}

func keySet(t testing.TB, alg string) *KeySet {
	k, err := GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := NewKeySet(k, []*Key{k})
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func opts() VerifyOptions {
	return VerifyOptions{Issuer: "https://actas.example", Audience: "product", Now: now, Leeway: 30 * time.Second}
}

func TestSignVerifyAllAlgorithms(t *testing.T) {
	for _, alg := range []string{ES256, RS256, EdDSA} {
		t.Run("ok/"+alg, func(t *testing.T) {
			ks := keySet(t, alg)
			tok, err := ks.Sign(sample())
			if err != nil {
				t.Fatal(err)
			}
			hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
			var h map[string]string
			json.Unmarshal(hdr, &h)
			if h["typ"] != "at+jwt" || h["kid"] != ks.SigningKeyID() || h["alg"] != alg {
				t.Fatalf("header = %v", h)
			}
			c, err := ks.Verify(tok, opts())
			if err != nil || c.Act.Sub != "eng" || c.Scope != "read write" {
				t.Fatalf("verify: %+v %v", c, err)
			}
			var jwks jose.JSONWebKeySet
			if err := json.Unmarshal(ks.JWKS(), &jwks); err != nil || len(jwks.Keys) != 1 || !jwks.Keys[0].IsPublic() {
				t.Fatalf("JWKS must hold exactly the public key: %s", ks.JWKS())
			}
		})
	}
}

func TestSignRefusesBrokenClaims(t *testing.T) {
	ks := keySet(t, ES256)
	c := sample()
	c.Exp = c.GrantExp + 1
	if _, err := ks.Sign(c); err == nil {
		t.Fatal("signed a token outliving its grant")
	}
	c = sample()
	c.Act.Sub = ""
	if _, err := ks.Sign(c); err == nil {
		t.Fatal("signed a token without an actor")
	}
}

func encode(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestVerifyRejects(t *testing.T) {
	ks := keySet(t, ES256)
	other := keySet(t, ES256)
	good, _ := ks.Sign(sample())
	parts := strings.Split(good, ".")
	forged, _ := other.Sign(sample())
	claimsWithout := func(drop string) string {
		m := map[string]any{}
		b, _ := json.Marshal(sample())
		json.Unmarshal(b, &m)
		delete(m, drop)
		return parts[0] + "." + encode(m) + "." + parts[2]
	}
	// A correctly signed token with typ JWT instead of at+jwt.
	k, _ := GenerateKey(ES256)
	plainSigner, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.Private}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.ID))
	payload, _ := json.Marshal(sample())
	obj, _ := plainSigner.Sign(payload)
	wrongTyp, _ := obj.CompactSerialize()
	typKS, _ := NewKeySet(k, []*Key{k})

	for _, tc := range []struct {
		name string
		ks   *KeySet
		tok  string
		o    func(*VerifyOptions)
		want error
	}{
		{"fail/alg none", ks, encode(map[string]string{"alg": "none", "typ": "at+jwt", "kid": ks.SigningKeyID()}) + "." + parts[1] + ".", nil, ErrAlgorithm},
		{"fail/HS256 with the public key", ks, encode(map[string]string{"alg": "HS256", "typ": "at+jwt", "kid": ks.SigningKeyID()}) + "." + parts[1] + "." + parts[2], nil, ErrAlgorithm},
		{"fail/other key, unknown kid", ks, forged, nil, ErrUnknownKey},
		{"fail/tampered payload", ks, parts[0] + "." + encode(map[string]any{"iss": "x"}) + "." + parts[2], nil, ErrSignature},
		{"fail/wrong typ", typKS, wrongTyp, nil, ErrType},
		{"fail/missing exp", ks, claimsWithout("exp"), nil, ErrSignature},
		{"fail/garbage", ks, "not.a.jwt", nil, ErrMalformed},
		{"fail/expired", ks, good, func(o *VerifyOptions) { o.Now = now.Add(16 * time.Minute) }, ErrExpired},
		{"fail/not yet valid", ks, good, func(o *VerifyOptions) { o.Now = now.Add(-time.Minute) }, ErrNotYetValid},
		{"fail/wrong issuer", ks, good, func(o *VerifyOptions) { o.Issuer = "https://evil" }, ErrIssuer},
		{"fail/wrong audience", ks, good, func(o *VerifyOptions) { o.Audience = "other" }, ErrAudience},
		{"fail/expired on a cache hit", ks, good, func(o *VerifyOptions) { o.Now = now.Add(time.Hour) }, ErrExpired},
		{"ok/within leeway", ks, good, func(o *VerifyOptions) { o.Now = now.Add(15*time.Minute + 10*time.Second) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts()
			if tc.o != nil {
				tc.o(&o)
			}
			_, err := tc.ks.Verify(tc.tok, o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := ks.Verify(good, VerifyOptions{Issuer: "https://actas.example", Now: now}); err == nil {
		t.Fatal("an empty audience must be an error unless skipped explicitly")
	}
}

func TestMissingRegisteredClaim(t *testing.T) {
	k, _ := GenerateKey(ES256)
	ks, _ := NewKeySet(k, []*Key{k})
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.Private}, (&jose.SignerOptions{}).WithType(TokenType).WithHeader("kid", k.ID))
	for _, drop := range []string{"exp", "iat", "nbf", "jti", "iss", "aud", "sub"} {
		m := map[string]any{}
		b, _ := json.Marshal(sample())
		json.Unmarshal(b, &m)
		delete(m, drop)
		payload, _ := json.Marshal(m)
		obj, _ := signer.Sign(payload)
		tok, _ := obj.CompactSerialize()
		if _, err := ks.Verify(tok, opts()); !errors.Is(err, ErrMissing) {
			t.Errorf("without %s: got %v, want ErrMissing", drop, err)
		}
	}
}

func TestSealedKeys(t *testing.T) {
	kek := make([]byte, 32)
	k, _ := GenerateKey(EdDSA)
	der, _ := k.MarshalPrivate()
	sealed, err := Seal(kek, der, []byte(k.ID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(kek, sealed, []byte("another-kid")); err == nil {
		t.Fatal("a sealed key opened under another key id")
	}
	wrong := make([]byte, 32)
	wrong[0] = 1
	if _, err := Open(wrong, sealed, []byte(k.ID)); err == nil {
		t.Fatal("a sealed key opened under the wrong key-encryption key")
	}
	pt, err := Open(kek, sealed, []byte(k.ID))
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParsePrivate(EdDSA, pt)
	if err != nil || back.ID != k.ID {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := ParsePrivate(ES256, pt); err == nil {
		t.Fatal("an Ed25519 key parsed as ES256")
	}
}

func BenchmarkVerifyCold(b *testing.B) {
	ks := keySet(b, ES256)
	toks := make([]string, b.N) // every token new to the cache
	for i := range toks {
		c := sample()
		c.Jti = fmt.Sprint("jti-", i)
		toks[i], _ = ks.Sign(c)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ks.Verify(toks[i], opts()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	ks := keySet(b, ES256)
	tok, _ := ks.Sign(sample())
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ks.Verify(tok, opts()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	ks := keySet(b, ES256)
	c := sample()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ks.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
}
