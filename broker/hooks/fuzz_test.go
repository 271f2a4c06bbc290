package hooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"testing"
	"time"
)

// FuzzCheckSignature: whatever the headers and body, a call is accepted
// only with the exact HMAC of its own timestamp and body, inside the window.
func FuzzCheckSignature(f *testing.F) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	sign := func(ts string, body []byte) string {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(ts + "."))
		m.Write(body)
		return "sha256=" + hex.EncodeToString(m.Sum(nil))
	}
	good := strconv.FormatInt(now.Unix(), 10)
	body := []byte(`{"tenant":"acme","ticket":"T-1","status":"Solved"}`)
	f.Add(good, sign(good, body), body)
	f.Add(good, "sha256=", body)
	f.Add("", "", []byte{})
	f.Add("-9223372036854775808", sign("-9223372036854775808", nil), []byte(nil))
	f.Add(good, "SHA256="+sign(good, body)[7:], body)
	f.Fuzz(func(t *testing.T, ts, sig string, body []byte) {
		got, err := checkSignature(secret, ts, sig, body, now, 5*time.Minute)
		if err != nil {
			return
		}
		want := sign(ts, body)
		if sig != want && "sha256="+hex.EncodeToString(got) != want {
			t.Fatalf("accepted %q for timestamp %q", sig, ts)
		}
		n, perr := strconv.ParseInt(ts, 10, 64)
		if perr != nil || now.Sub(time.Unix(n, 0)).Abs() > 5*time.Minute {
			t.Fatalf("accepted timestamp %q outside the window", ts)
		}
	})
}
