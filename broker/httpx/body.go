package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 64 << 10

// ErrBodyTooLarge is a body over MaxBodyBytes.
var ErrBodyTooLarge = errors.New("body too large")

// ReadBody reads at most MaxBodyBytes.
func ReadBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxBodyBytes {
		return nil, ErrBodyTooLarge
	}
	return body, nil
}

// BodyError is a request body that cannot be accepted, with the status,
// code and message to answer.
type BodyError struct {
	Status  int
	Code    string
	Message string
}

func (e *BodyError) Error() string { return e.Message }

// Bad is a 400 BodyError.
func Bad(code, msg string) *BodyError {
	return &BodyError{Status: http.StatusBadRequest, Code: code, Message: msg}
}

// ErrTooLarge answers a body over MaxBodyBytes.
var ErrTooLarge = &BodyError{Status: http.StatusRequestEntityTooLarge, Code: "request_too_large", Message: "request body is larger than 64 KiB"}

// DecodeJSON strictly decodes a JSON object body into v: the right content
// type, at most 64 KiB, no unknown or duplicate fields, nothing after it.
func DecodeJSON(r *http.Request, v any) *BodyError {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return Bad("invalid_request", "Content-Type must be application/json")
	}
	body, err := ReadBody(r)
	if errors.Is(err, ErrBodyTooLarge) {
		return ErrTooLarge
	}
	if err != nil {
		return Bad("invalid_request", "could not read the request body")
	}
	if err := checkKeys(body, jsonFieldNames(v)); err != nil {
		return Bad("invalid_json", err.Error())
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Bad("invalid_json", jsonErrorText(err))
	}
	if dec.More() {
		return Bad("invalid_json", "unexpected data after the JSON object")
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

// errSyntax stops checkKeys at malformed JSON; the real decode reports it.
var errSyntax = errors.New("syntax")

// checkKeys rejects JSON objects that repeat a key — the standard decoder
// silently keeps the last one, which would let two parsers of the same body
// disagree — and top-level keys not in allowed. At the first malformed
// token it stops (dec.More keeps answering true after a syntax error, so
// looping on it would never end) and leaves the error to the real decode.
func checkKeys(body []byte, allowed map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	depth := 0
	var walk func() error
	walk = func() error {
		tok, err := dec.Token()
		if err != nil {
			return errSyntax
		}
		switch tok {
		case json.Delim('{'):
			depth++
			defer func() { depth-- }()
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return errSyntax
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
			if _, err := dec.Token(); err != nil {
				return errSyntax
			}
		case json.Delim('['):
			for dec.More() {
				if err := walk(); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return errSyntax
			}
		}
		return nil
	}
	if err := walk(); err != errSyntax {
		return err
	}
	return nil
}

// WriteJSON writes v with status and no-store caching.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
