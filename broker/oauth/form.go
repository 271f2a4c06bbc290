package oauth

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/actas/actas/broker/httpx"
)

// form is a parsed application/x-www-form-urlencoded body where every
// parameter appears at most once (RFC 6749 §3.1, §3.2).
type form map[string]string

// parseForm reads an OAuth request body. Query-string parameters are not
// considered: credentials and codes never travel in URLs.
func parseForm(r *http.Request) (form, *Error) {
	if r.Method != http.MethodPost {
		return nil, ErrMethod
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, ErrInvalidRequest.With("Content-Type must be application/x-www-form-urlencoded")
	}
	body, err := httpx.ReadBody(r)
	if errors.Is(err, httpx.ErrBodyTooLarge) {
		return nil, ErrTooLarge
	}
	if err != nil {
		return nil, ErrInvalidRequest.With("could not read the request body")
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, ErrInvalidRequest.With("the body is not valid form encoding")
	}
	f := form{}
	for k, v := range vals {
		if len(v) != 1 {
			return nil, ErrInvalidRequest.With(fmt.Sprintf("parameter %q appears more than once", k))
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v[0]) {
			return nil, ErrInvalidRequest.With("parameters must be UTF-8")
		}
		f[k] = v[0]
	}
	return f, nil
}

// require returns an invalid_request naming the first of names that is
// missing or empty.
func (f form) require(names ...string) *Error {
	for _, n := range names {
		if f[n] == "" {
			return ErrInvalidRequest.With(fmt.Sprintf("missing parameter %q", n))
		}
	}
	return nil
}

// parseScope splits an RFC 6749 §3.3 scope parameter.
func parseScope(s string) ([]string, *Error) {
	if s == "" {
		return nil, nil
	}
	out := strings.Split(s, " ")
	for _, sc := range out {
		if sc == "" || len(sc) > 128 || strings.ContainsAny(sc, "\"\\") {
			return nil, ErrInvalidScope.With("scope must be space-separated scope tokens")
		}
	}
	return out, nil
}
