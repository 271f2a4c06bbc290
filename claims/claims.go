package claims

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// TokenType is the JWS typ of actas access tokens (RFC 9068 §2.1).
const TokenType = "at+jwt"

// Actor is the RFC 8693 §4.1 act claim: the engineer acting as the subject.
type Actor struct {
	Sub   string `json:"sub"`
	Iss   string `json:"iss"`
	Email string `json:"email,omitempty"`
}

// Claims is the access token claim set of DESIGN.md.
type Claims struct {
	Iss          string   `json:"iss"`
	Sub          string   `json:"sub"`
	Aud          []string `json:"aud"`
	ClientID     string   `json:"client_id"`
	Exp          int64    `json:"exp"`
	Iat          int64    `json:"iat"`
	Nbf          int64    `json:"nbf"`
	Jti          string   `json:"jti"`
	Act          Actor    `json:"act"`
	Tenant       string   `json:"tenant"`
	Roles        []string `json:"roles"`
	Environments []string `json:"environments"`
	Resources    []string `json:"resources,omitempty"`
	Scope        string   `json:"scope"`
	GrantID      string   `json:"grant_id"`
	GrantExp     int64    `json:"grant_exp"`
	Ticket       string   `json:"ticket,omitempty"`
	// Cnf binds the token to a DPoP key (RFC 9449 §6.1); nil for a bearer token.
	Cnf *Confirmation `json:"cnf,omitempty"`
}

// Confirmation is the RFC 7800 cnf claim with the RFC 9449 jkt member.
type Confirmation struct {
	JKT string `json:"jkt"`
}

// Validate checks the invariants of an actas claim set before signing:
// every required claim present, exp after iat, exp never past grant_exp.
func (c *Claims) Validate() error {
	var missing []string
	for name, v := range map[string]string{
		"iss": c.Iss, "sub": c.Sub, "client_id": c.ClientID, "jti": c.Jti,
		"act.sub": c.Act.Sub, "act.iss": c.Act.Iss, "tenant": c.Tenant, "grant_id": c.GrantID,
	} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(c.Aud) == 0 {
		missing = append(missing, "aud")
	}
	if len(c.Roles) == 0 {
		missing = append(missing, "roles")
	}
	if len(c.Environments) == 0 {
		missing = append(missing, "environments")
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("claims: missing %s", strings.Join(missing, ", "))
	}
	if c.Exp <= c.Iat || c.Nbf > c.Exp {
		return errors.New("claims: exp must be after iat and nbf")
	}
	if c.Exp > c.GrantExp {
		return errors.New("claims: exp is past grant_exp")
	}
	return nil
}

// wireClaims mirrors Claims with pointers for the registered claims so that
// verification can tell an absent claim from a zero one.
type wireClaims struct {
	Claims
	Exp *int64 `json:"exp"`
	Iat *int64 `json:"iat"`
	Nbf *int64 `json:"nbf"`
}

// Errors returned by Verify. They are for logs and metrics: clients of
// introspection only ever see {"active": false}.
var (
	ErrMalformed   = errors.New("token: malformed")
	ErrAlgorithm   = errors.New("token: algorithm not allowed")
	ErrType        = errors.New("token: wrong typ")
	ErrUnknownKey  = errors.New("token: unknown signing key")
	ErrSignature   = errors.New("token: bad signature")
	ErrIssuer      = errors.New("token: wrong issuer")
	ErrAudience    = errors.New("token: wrong audience")
	ErrExpired     = errors.New("token: expired")
	ErrNotYetValid = errors.New("token: not yet valid")
	ErrMissing     = errors.New("token: required claim missing")
)

func decodeClaims(payload []byte) (*Claims, error) {
	var w wireClaims
	if err := json.Unmarshal(payload, &w); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	if w.Exp == nil || w.Iat == nil || w.Nbf == nil || w.Jti == "" || w.Iss == "" || len(w.Aud) == 0 || w.Sub == "" {
		return nil, ErrMissing
	}
	c := w.Claims
	c.Exp, c.Iat, c.Nbf = *w.Exp, *w.Iat, *w.Nbf
	return &c, nil
}

// checkTimes applies exp, nbf and iat with leeway for clock skew.
func checkTimes(c *Claims, now time.Time, leeway time.Duration) error {
	n := now.Unix()
	l := int64(leeway / time.Second)
	if n >= c.Exp+l {
		return ErrExpired
	}
	if c.Nbf > n+l || c.Iat > n+l {
		return ErrNotYetValid
	}
	return nil
}
