package rp

import (
	"context"
	"testing"
)

// FuzzVerifyAndSET: no token or SET makes the kit panic; nothing but
// what the issuer signed is accepted.
func FuzzVerifyAndSET(f *testing.F) {
	is := newIssuer(f)
	v := newVerifier(f, is)
	good := is.token(f, nil)
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.Verify(context.Background(), tok)
		if err == nil && tok != good {
			t.Fatalf("accepted a token the issuer did not sign: %q %+v", tok, id)
		}
		if _, err := v.ApplySET(context.Background(), tok); err == nil && tok != good {
			t.Fatalf("applied a SET the issuer did not sign: %q", tok)
		}
	})
}
