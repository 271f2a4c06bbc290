package claims

import (
	"strings"
	"testing"
)

// FuzzVerify: a token verifies only if it is exactly a token this key set
// signed; mangled, truncated or forged input is refused without panicking.
func FuzzVerify(f *testing.F) {
	ks := keySet(f, "ES256")
	good, err := ks.Sign(sample())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := ks.Verify(tok, opts())
		if err != nil {
			return
		}
		if tok != good {
			t.Fatalf("verified a token this set did not sign: %q", tok)
		}
		if c.Jti != sample().Jti {
			t.Fatalf("wrong claims: %+v", c)
		}
	})
}
