package httpx

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzDecodeJSON: any body is either decoded with only known, unrepeated
// fields or refused with a 4xx BodyError; it never panics.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{"role":"admin","environments":["production"],"expires_in":3600}`, `{"role":"a","role":"b"}`,
		`{"x":1}`, `[]`, `{"environments":[{"a":{"a":1}}]}`, `{"expires_in":1e400}`, `{} {}`, ``, `{"role":"\ud800"}`} {
		f.Add(s)
	}
	type body struct {
		Role         string   `json:"role"`
		Environments []string `json:"environments"`
		ExpiresIn    *int64   `json:"expires_in"`
	}
	f.Fuzz(func(t *testing.T, s string) {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(s))
		req.Header.Set("Content-Type", "application/json")
		var b body
		if be := DecodeJSON(req, &b); be != nil {
			if be.Status < 400 || be.Status >= 500 || be.Code == "" || be.Message == "" {
				t.Fatalf("bad refusal %+v", be)
			}
			if strings.Contains(be.Message, "main.") || strings.Contains(be.Message, "httpx.") {
				t.Fatalf("Go type names leak: %q", be.Message)
			}
		}
	})
}
