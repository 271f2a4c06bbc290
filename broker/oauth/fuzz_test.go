package oauth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseForm: any body either parses into single-valued UTF-8
// parameters or is refused with an RFC 6749 error; it never panics.
func FuzzParseForm(f *testing.F) {
	for _, s := range []string{"grant_type=refresh_token&refresh_token=x", "a=1&a=2", "%zz", "a=%ff", "=&=", strings.Repeat("a", 70000), "scope=read+write"} {
		f.Add(s, "application/x-www-form-urlencoded")
	}
	f.Add("a=b", "application/json")
	f.Fuzz(func(t *testing.T, body, ctype string) {
		req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		fm, oe := parseForm(req)
		if oe != nil {
			if oe.Code == "" || oe.status < 400 {
				t.Fatalf("bad error %+v", oe)
			}
			return
		}
		for k, v := range fm {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				t.Fatalf("accepted non-UTF-8 %q=%q", k, v)
			}
		}
		if sc, oe := parseScope(fm["scope"]); oe == nil {
			for _, s := range sc {
				if s == "" || strings.ContainsAny(s, "\"\\ ") {
					t.Fatalf("bad scope token %q", s)
				}
			}
		}
	})
}
