package rp

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/actas/actas/rp/dpop"
)

type ctxKey struct{}

// FromContext returns the identity the middleware verified.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(*Identity)
	return id, ok
}

// Middleware lets a request through only with a valid actas token for this
// audience (and its DPoP proof, if bound), putting the identity on the
// request context; anything else answers 401 with an RFC 6750 challenge.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, scheme, err := v.authenticate(r)
		if err != nil {
			v.refuse(w, scheme, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	})
}

// errProof marks a DPoP proof failure (error invalid_dpop_proof).
var errProof = errors.New("rp: invalid DPoP proof")

// authenticate checks the request's token and returns its identity and
// the scheme used.
func (v *Verifier) authenticate(r *http.Request) (*Identity, string, error) {
	auth := r.Header.Values("Authorization")
	if len(auth) != 1 {
		return nil, "", invalid("send one Authorization header")
	}
	scheme, token, _ := strings.Cut(auth[0], " ")
	scheme = strings.ToLower(scheme)
	if token == "" || (scheme != "bearer" && scheme != "dpop") {
		return nil, "bearer", invalid("use the Bearer or DPoP scheme")
	}
	id, err := v.Verify(r.Context(), token)
	if err != nil {
		return nil, scheme, err
	}
	switch {
	case id.JKT != "" && scheme != "dpop":
		return nil, "dpop", invalid("the token is DPoP-bound: present it with the DPoP scheme and a proof")
	case id.JKT == "" && scheme == "dpop":
		return nil, scheme, invalid("the token is not DPoP-bound")
	case id.JKT != "":
		if err := v.checkProof(r, token, id.JKT); err != nil {
			return nil, scheme, err
		}
	}
	if v.cfg.Introspect != nil {
		active, err := v.introspectCached(r.Context(), token)
		if err != nil {
			return nil, scheme, err
		}
		if !active {
			return nil, scheme, ErrRevoked
		}
	}
	return id, scheme, nil
}

// checkProof verifies a bound token's proof for this very request, once.
func (v *Verifier) checkProof(r *http.Request, token, jkt string) error {
	proof, err := dpop.FromRequest(r)
	if err != nil || proof == "" {
		return fmt.Errorf("%w: a DPoP header with a proof is required", errProof)
	}
	p, err := dpop.Verify(proof, dpop.Expect{Method: r.Method, URL: v.requestURL(r), AccessToken: token, Now: v.now()})
	if err != nil {
		return fmt.Errorf("%w: %s", errProof, strings.TrimPrefix(err.Error(), dpop.ErrInvalidProof.Error()+": "))
	}
	if p.JKT != jkt {
		return fmt.Errorf("%w: the proof is not made with the token's key", errProof)
	}
	if !v.proofs.add(p.JKT+"."+p.JTI, struct{}{}, p.Expiry) {
		return fmt.Errorf("%w: the proof was used before", errProof)
	}
	return nil
}

// requestURL is the URL the client addressed, for htu.
func (v *Verifier) requestURL(r *http.Request) string {
	if v.cfg.PublicURL != "" {
		return strings.TrimRight(v.cfg.PublicURL, "/") + r.URL.EscapedPath()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return (&url.URL{Scheme: scheme, Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath}).String()
}

func (v *Verifier) refuse(w http.ResponseWriter, scheme string, err error) {
	code, status := "invalid_token", http.StatusUnauthorized
	switch {
	case errors.Is(err, errProof):
		code = "invalid_dpop_proof"
	case errors.Is(err, errUnavailable):
		code, status = "temporarily_unavailable", http.StatusServiceUnavailable
	}
	desc := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "rp: "), "invalid token: ")
	params := fmt.Sprintf(`, error="%s", error_description="%s"`, code, strings.ReplaceAll(desc, `"`, `'`))
	bearer, dp := `Bearer realm="actas"`, `DPoP realm="actas", algs="ES256 ES384 ES512 EdDSA PS256 RS256"`
	if scheme == "dpop" {
		dp += params
	} else {
		bearer += params
	}
	w.Header().Add("WWW-Authenticate", bearer)
	w.Header().Add("WWW-Authenticate", dp)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

var errUnavailable = errors.New("rp: actas introspection is unavailable")

// introspectCached asks actas whether the token is active, remembering
// the answer for at most CacheTTL.
func (v *Verifier) introspectCached(ctx context.Context, token string) (bool, error) {
	key := sha256.Sum256([]byte(token))
	if a, ok := v.answers.get(key); ok {
		return a, nil
	}
	in := v.cfg.Introspect
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, v.introspect, strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(in.ClientID), url.QueryEscape(in.ClientSecret))
	resp, err := v.client.Do(req)
	if err != nil {
		return false, errUnavailable
	}
	defer resp.Body.Close()
	var body struct {
		Active bool `json:"active"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil {
		return false, errUnavailable // never fall back to the JWT alone
	}
	v.answers.put(key, body.Active, v.now().Add(in.CacheTTL))
	return body.Active, nil
}
