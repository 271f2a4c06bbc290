package engineer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// discovery is what the CLI reads from the broker's metadata.
type discovery struct {
	Issuer             string     `json:"issuer"`
	TokenEndpoint      string     `json:"token_endpoint"`
	RevocationEndpoint string     `json:"revocation_endpoint"`
	SupportIDP         SupportIdP `json:"actas_support_idp"`
	CLIClientID        string     `json:"actas_cli_client_id"`
}

func (cl *Client) discover(ctx context.Context) (*discovery, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cl.Broker+"/.well-known/openid-configuration", nil)
	resp, err := cl.HTTP.Do(req)
	if err != nil {
		return nil, unreachable("the broker", cl.Broker, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errorf(ExitUnreachable, "the broker at %s answered %s for its discovery document: is --broker right?", cl.Broker, resp.Status)
	}
	var d discovery
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&d); err != nil {
		return nil, errorf(ExitError, "the broker at %s sent an unreadable discovery document", cl.Broker)
	}
	switch {
	case d.Issuer != cl.Broker:
		return nil, errorf(ExitError, "the broker at %s calls itself %q: use --broker %s", cl.Broker, d.Issuer, d.Issuer)
	case d.SupportIDP.Issuer == "" || d.SupportIDP.ClientID == "":
		return nil, errorf(ExitError, "the broker at %s publishes no actas_support_idp: it is not an actas broker, or too old for this CLI", cl.Broker)
	case d.CLIClientID == "":
		return nil, errorf(ExitError, "the broker at %s publishes no actas_cli_client_id: its operator must register a public client for the CLI (cli_client_id)", cl.Broker)
	}
	// Tokens go to the broker and nowhere else.
	for _, ep := range []string{d.TokenEndpoint, d.RevocationEndpoint} {
		if !strings.HasPrefix(ep, cl.Broker+"/") {
			return nil, errorf(ExitError, "the broker at %s names an endpoint outside itself (%q); refusing to send tokens there", cl.Broker, ep)
		}
	}
	return &d, nil
}

func unreachable(what, where string, err error) *Error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return errorf(ExitUnreachable, "cannot reach %s at %s: %v", what, where, err)
}

// tokenResponse is RFC 6749 §5.1.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// oauthError is an RFC 6749 §5.2 answer.
type oauthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
	status      int
}

func (e *oauthError) Error() string {
	if e.Description == "" {
		return e.Code
	}
	return e.Description
}

// post sends a form to one of the broker's endpoints as the CLI's public
// client, with a DPoP proof when c's key is to be used. A non-2xx answer
// is an *oauthError; an unreachable or unavailable broker an *Error.
func (cl *Client) post(ctx context.Context, c *Cache, endpoint string, form url.Values, proof bool, out any) error {
	form.Set("client_id", c.CLIClient)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if proof {
		p, err := c.key.Proof(http.MethodPost, endpoint, "", cl.now())
		if err != nil {
			return err
		}
		req.Header.Set("DPoP", p)
	}
	resp, err := cl.HTTP.Do(req)
	if err != nil {
		return unreachable("the broker", cl.Broker, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(body, out); err != nil {
			return errorf(ExitError, "the broker sent an unreadable answer")
		}
		return nil
	}
	oe := &oauthError{status: resp.StatusCode}
	if json.Unmarshal(body, oe) != nil || oe.Code == "" {
		oe.Code, oe.Description = "http_"+fmt.Sprint(resp.StatusCode), "the broker answered "+resp.Status
	}
	if resp.StatusCode >= 500 || oe.Code == "temporarily_unavailable" {
		return errorf(ExitUnreachable, "the broker is unavailable: %s; try again", oe)
	}
	return oe
}

// accessClaims are the access token claims the CLI shows. They are read,
// not verified: the token came straight from the broker over the
// connection the CLI chose, and the CLI decides nothing on them.
type accessClaims struct {
	Sub          string   `json:"sub"`
	Tenant       string   `json:"tenant"`
	Roles        []string `json:"roles"`
	Environments []string `json:"environments"`
	Aud          any      `json:"aud"`
	GrantID      string   `json:"grant_id"`
	GrantExp     int64    `json:"grant_exp"`
	Iat          int64    `json:"iat"`
	Exp          int64    `json:"exp"`
	Cnf          *struct {
		JKT string `json:"jkt"`
	} `json:"cnf"`
}

func readClaims(token string) (*accessClaims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var c accessClaims
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	if c.GrantID == "" || c.Exp == 0 {
		return nil, errors.New("missing grant_id or exp")
	}
	return &c, nil
}

func (c *accessClaims) audience() string {
	switch a := c.Aud.(type) {
	case string:
		return a
	case []any:
		if len(a) > 0 {
			s, _ := a[0].(string)
			return s
		}
	}
	return ""
}

// store applies a token response to g, checking that the broker bound the
// token to the CLI's key when asked to.
func (g *Grant) store(c *Cache, tr *tokenResponse) error {
	cl, err := readClaims(tr.AccessToken)
	if err != nil {
		return errorf(ExitError, "the broker sent an access token the CLI cannot read: %v", err)
	}
	if g.DPoP && (cl.Cnf == nil || cl.Cnf.JKT != c.key.Thumbprint() || !strings.EqualFold(tr.TokenType, "DPoP")) {
		return errorf(ExitError, "the broker did not bind the token to this CLI's DPoP key; refusing to keep a bearer token (use --no-dpop to accept one)")
	}
	g.ID, g.Tenant, g.Subject, g.Roles, g.Environments = cl.GrantID, cl.Tenant, cl.Sub, cl.Roles, cl.Environments
	g.Audience = cl.audience()
	g.GrantExpiry = time.Unix(cl.GrantExp, 0).UTC()
	g.AccessToken, g.IssuedAt, g.Expiry = tr.AccessToken, time.Unix(cl.Iat, 0).UTC(), time.Unix(cl.Exp, 0).UTC()
	if tr.RefreshToken != "" {
		g.RefreshToken = tr.RefreshToken
	}
	return nil
}
