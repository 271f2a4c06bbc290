package dpop

import (
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// The proof of RFC 9449 Figure 3 (§4.2), its key's thumbprint (§6.1) and
// the access-token hash of §7.1.
const (
	rfcProof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19" +
		".eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ" +
		".2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
	rfcJKT         = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
	rfcAccessToken = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
	rfcATH         = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
)

var rfcTime = time.Unix(1562262616, 0)

func TestRFCVectors(t *testing.T) {
	p, err := Verify(rfcProof, Expect{Method: "POST", URL: "https://server.example.com/token", Now: rfcTime.Add(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if p.JKT != rfcJKT || p.JTI != "-BwC3ESc6acc2lTc" || !p.IssuedAt.Equal(rfcTime) || !p.Expiry.Equal(rfcTime.Add(DefaultMaxAge)) {
		t.Fatalf("proof: %+v", p)
	}
	if got := ATH(rfcAccessToken); got != rfcATH {
		t.Fatalf("ath %s, want %s", got, rfcATH)
	}
}

func TestVerifyRefuses(t *testing.T) {
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good := Expect{Method: "GET", URL: "https://rs.example/api/x?q=1", AccessToken: "tok", Now: now}
	proof := func(method, url, at string, iat time.Time) string {
		s, err := key.Proof(method, url, at, iat)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	p, err := Verify(proof("GET", "https://RS.example:443/api/x#frag", "tok", now), good)
	if err != nil || p.JKT != key.Thumbprint() {
		t.Fatalf("ok/normalised URL: %v %+v", err, p)
	}

	hmac, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")},
		(&jose.SignerOptions{}).WithType(Type))
	hs, _ := hmac.Sign([]byte(`{"jti":"a","htm":"GET","htu":"https://rs.example/api/x","iat":1}`))
	hsProof, _ := hs.CompactSerialize()
	parts := strings.Split(proof("GET", good.URL, "tok", now), ".")
	other, _ := NewKey()
	otherParts := strings.Split(mustProof(t, other, "GET", good.URL, "tok", now), ".")

	for name, c := range map[string]struct {
		proof string
		want  string
	}{
		"fail/wrong method":          {proof("POST", good.URL, "tok", now), "htm"},
		"fail/wrong URL":             {proof("GET", "https://rs.example/api/y", "tok", now), "htu"},
		"fail/other host":            {proof("GET", "https://evil.example/api/x", "tok", now), "htu"},
		"fail/other token":           {proof("GET", good.URL, "tok2", now), "ath does not match"},
		"fail/no ath":                {proof("GET", good.URL, "", now), "ath is missing"},
		"fail/too old":               {proof("GET", good.URL, "tok", now.Add(-2*time.Minute)), "too old"},
		"fail/from the future":       {proof("GET", good.URL, "tok", now.Add(2*time.Minute)), "future"},
		"fail/MAC algorithm":         {hsProof, "allowed asymmetric"},
		"fail/signature of another":  {parts[0] + "." + parts[1] + "." + otherParts[2], "signature"},
		"fail/header of another key": {otherParts[0] + "." + parts[1] + "." + parts[2], "signature"},
		"fail/garbage":               {"not.a.proof", "not a JWS"},
		"fail/empty":                 {"", "empty"},
		"fail/huge":                  {strings.Repeat("a", 9000), "larger"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Verify(c.proof, good)
			if !errors.Is(err, ErrInvalidProof) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an invalid proof about %q", err, c.want)
			}
		})
	}
}

func TestVerifyRefusesWrongTypeAndPrivateKey(t *testing.T) {
	key, _ := NewKey()
	now := time.Now()
	payload := []byte(`{"jti":"j","htm":"POST","htu":"https://as.example/token","iat":` + itoa(now.Unix()) + `}`)
	sign := func(opts *jose.SignerOptions) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key.jwk.Key}, opts)
		if err != nil {
			t.Fatal(err)
		}
		o, err := s.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := o.CompactSerialize()
		return c
	}
	e := Expect{Method: "POST", URL: "https://as.example/token", Now: now}
	if _, err := Verify(sign((&jose.SignerOptions{EmbedJWK: true}).WithType("JWT")), e); err == nil || !strings.Contains(err.Error(), "typ") {
		t.Fatalf("typ JWT: %v", err)
	}
	if _, err := Verify(sign((&jose.SignerOptions{}).WithType(Type)), e); err == nil || !strings.Contains(err.Error(), "jwk") {
		t.Fatalf("no jwk: %v", err)
	}
	// A private key in the header is refused (by go-jose or by Verify).
	priv, _ := key.MarshalJSON()
	hdr := `{"alg":"ES256","typ":"dpop+jwt","jwk":` + string(priv) + `}`
	parts := strings.Split(sign((&jose.SignerOptions{EmbedJWK: true}).WithType(Type)), ".")
	forged := b64(hdr) + "." + parts[1] + "." + parts[2]
	if _, err := Verify(forged, e); err == nil {
		t.Fatal("a private jwk header was accepted")
	}
	if _, err := Verify(sign((&jose.SignerOptions{EmbedJWK: true}).WithType(Type)), e); err != nil {
		t.Fatalf("control: %v", err)
	}
}

func TestKeyRoundTrip(t *testing.T) {
	k, _ := NewKey()
	b, err := k.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseKey(b)
	if err != nil || k2.Thumbprint() != k.Thumbprint() {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := ParseKey([]byte(`{"kty":"oct","k":"AAAA"}`)); err == nil {
		t.Fatal("a symmetric key was accepted")
	}
}

func TestNormalizeURL(t *testing.T) {
	for in, want := range map[string]string{
		"HTTPS://Example.COM":           "https://example.com/",
		"https://example.com:443/a?b#c": "https://example.com/a",
		"http://127.0.0.1:80/token":     "http://127.0.0.1/token",
		"http://127.0.0.1:8080/token":   "http://127.0.0.1:8080/token",
		"http://[::1]:9/x":              "http://[::1]:9/x",
	} {
		if got, err := NormalizeURL(in); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/token", "ftp://x/y", "https://user@x/y", "::"} {
		if _, err := NormalizeURL(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func mustProof(t *testing.T, k *Key, method, url, at string, now time.Time) string {
	s, err := k.Proof(method, url, at, now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func BenchmarkVerify(b *testing.B) {
	k, _ := NewKey()
	now := time.Now()
	p, _ := k.Proof("GET", "https://rs.example/x", "tok", now)
	e := Expect{Method: "GET", URL: "https://rs.example/x", AccessToken: "tok", Now: now}
	for b.Loop() {
		if _, err := Verify(p, e); err != nil {
			b.Fatal(err)
		}
	}
}
