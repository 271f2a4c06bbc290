package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"unicode/utf8"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 64 << 10

var errBodyTooLarge = errors.New("body too large")

// readBody reads at most MaxBodyBytes.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxBodyBytes {
		return nil, errBodyTooLarge
	}
	return body, nil
}

// form is a parsed application/x-www-form-urlencoded body where every
// parameter appears at most once (RFC 6749 §3.1, §3.2).
type form map[string]string

// parseForm reads an OAuth request body. Query-string parameters are not
// considered: credentials and codes never travel in URLs.
func parseForm(r *http.Request) (form, *oauthError) {
	if r.Method != http.MethodPost {
		return nil, &errMethod
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		e := errInvalidRequest.with("Content-Type must be application/x-www-form-urlencoded")
		return nil, &e
	}
	body, err := readBody(r)
	if errors.Is(err, errBodyTooLarge) {
		return nil, &errTooLarge
	}
	if err != nil {
		e := errInvalidRequest.with("could not read the request body")
		return nil, &e
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		e := errInvalidRequest.with("the body is not valid form encoding")
		return nil, &e
	}
	f := form{}
	for k, v := range vals {
		if len(v) != 1 {
			e := errInvalidRequest.with(fmt.Sprintf("parameter %q appears more than once", k))
			return nil, &e
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v[0]) {
			e := errInvalidRequest.with("parameters must be UTF-8")
			return nil, &e
		}
		f[k] = v[0]
	}
	return f, nil
}

// require returns the named parameters or an invalid_request naming the
// first that is missing or empty.
func (f form) require(names ...string) *oauthError {
	for _, n := range names {
		if f[n] == "" {
			e := errInvalidRequest.with(fmt.Sprintf("missing parameter %q", n))
			return &e
		}
	}
	return nil
}

// decodeJSON strictly decodes a JSON object body into v: the right content
// type, at most 64 KiB, no unknown or duplicate fields, nothing after it.
func decodeJSON(r *http.Request, v any) *apiError {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		e := apiErr(http.StatusBadRequest, "invalid_request", "Content-Type must be application/json")
		return &e
	}
	body, err := readBody(r)
	if errors.Is(err, errBodyTooLarge) {
		return &apiTooLarge
	}
	if err != nil {
		e := apiErr(http.StatusBadRequest, "invalid_request", "could not read the request body")
		return &e
	}
	if err := checkKeys(body, jsonFieldNames(v)); err != nil {
		e := apiErr(http.StatusBadRequest, "invalid_json", err.Error())
		return &e
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		e := apiErr(http.StatusBadRequest, "invalid_json", jsonErrorText(err))
		return &e
	}
	if dec.More() {
		e := apiErr(http.StatusBadRequest, "invalid_json", "unexpected data after the JSON object")
		return &e
	}
	return nil
}

// jsonErrorText describes a decoding error without Go type names.
func jsonErrorText(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		if te.Field == "" {
			return "the body must be a JSON object"
		}
		return fmt.Sprintf("field %q has the wrong type (want %s)", te.Field, jsonKind(te.Type.Kind().String()))
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
	case errors.Is(err, io.EOF):
		return "the body is empty"
	}
	return "malformed JSON"
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice":
		return "a list"
	case "int", "int64", "float64":
		return "a number"
	case "ptr", "struct":
		return "an object"
	}
	return k
}

// jsonFieldNames returns the JSON names of the struct v points to.
func jsonFieldNames(v any) map[string]bool {
	t := reflect.TypeOf(v).Elem()
	names := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names[name] = true
		}
	}
	return names
}

// checkKeys rejects JSON objects that repeat a key — the standard decoder
// silently keeps the last one, which would let two parsers of the same body
// disagree — and top-level keys not in allowed.
func checkKeys(body []byte, allowed map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	depth := 0
	var walk func() error
	walk = func() error {
		tok, err := dec.Token()
		if err != nil {
			return nil // syntax errors are reported by the real decode
		}
		switch tok {
		case json.Delim('{'):
			depth++
			defer func() { depth-- }()
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil
				}
				key, _ := k.(string)
				if seen[key] {
					return fmt.Errorf("duplicate field %q", key)
				}
				if depth == 1 && !allowed[key] {
					return fmt.Errorf("unknown field %q", key)
				}
				seen[key] = true
				if err := walk(); err != nil {
					return err
				}
			}
			dec.Token()
		case json.Delim('['):
			for dec.More() {
				if err := walk(); err != nil {
					return err
				}
			}
			dec.Token()
		}
		return nil
	}
	return walk()
}
