package core

import (
	"encoding/json"
	"testing"
)

// FuzzParseTicket: a ticket either parses into values within their
// patterns or is refused with a message; it never panics.
func FuzzParseTicket(f *testing.F) {
	for _, s := range []string{`"T-1"`, `{"id":"T-1","system":"zendesk","severity":"S1"}`, `{"id":""}`, `""`, `null`, `{"id":"x","extra":1}`, `7`, `"\u0000"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tk, msg := ParseTicket(json.RawMessage(s))
		if msg != "" || tk.ID == "" {
			return
		}
		if !ticketIDRE.MatchString(tk.ID) || (tk.System != "" && !ticketSystemRE.MatchString(tk.System)) {
			t.Fatalf("accepted %+v", tk)
		}
	})
}

// FuzzUnverifiedIssuer: reading iss to pick a verifier never panics and
// never reads a token that is not a compact JWS.
func FuzzUnverifiedIssuer(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcCJ9.c2ln")
	f.Add("a.b.c")
	f.Add("....")
	f.Fuzz(func(t *testing.T, s string) {
		if iss := unverifiedIssuer(s); iss != "" && len(s) > 16384 {
			t.Fatalf("read iss %q from an oversized token", iss)
		}
	})
}
