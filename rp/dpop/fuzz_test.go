package dpop

import (
	"testing"
	"time"
)

// FuzzVerify: no input makes Verify panic, and whatever it accepts is
// a proof for the expected request.
func FuzzVerify(f *testing.F) {
	f.Add(rfcProof)
	f.Add("e30.e30.")
	f.Add("")
	k, _ := NewKey()
	p, _ := k.Proof("POST", "https://server.example.com/token", "", rfcTime)
	f.Add(p)
	e := Expect{Method: "POST", URL: "https://server.example.com/token", Now: rfcTime}
	f.Fuzz(func(t *testing.T, proof string) {
		got, err := Verify(proof, e)
		if err == nil && (got.JKT == "" || got.JTI == "" || got.IssuedAt.Before(rfcTime.Add(-2*time.Minute))) {
			t.Fatalf("accepted %q as %+v", proof, got)
		}
	})
}
