package oauth

import (
	"context"
	"net/http"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/httpx"
	"github.com/actas/actas/rp/dpop"
)

// tokenResponse is the RFC 8693 §2.2.1 / RFC 6749 §5.1 success response.
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	RefreshToken    string `json:"refresh_token,omitempty"`
	Scope           string `json:"scope,omitempty"`
	IDToken         string `json:"id_token,omitempty"`
}

func (h *Handler) token(w http.ResponseWriter, r *http.Request) {
	f, c, ok := h.request(w, r, false)
	if !ok {
		return
	}
	var is *core.Issued
	var idToken string
	var err error
	gt := f["grant_type"]
	switch gt {
	case GrantTypeTokenExchange, GrantTypeRefreshToken, GrantTypeAuthorizationCode:
		var b core.Binding
		if b, err = h.tokenBinding(r, c); err != nil {
			break
		}
		switch gt {
		case GrantTypeTokenExchange:
			is, err = h.exchange(r.Context(), c, f, b)
		case GrantTypeRefreshToken:
			is, err = h.refresh(r.Context(), c, f, b)
		default:
			is, idToken, err = h.authorizationCode(r.Context(), c, f, b)
		}
	case GrantTypeClientCredentials:
		h.clientCredentials(w, r, c, f)
		return
	case "":
		err = ErrInvalidRequest.With(`missing parameter "grant_type"`)
	default:
		err = ErrUnsupportedGrantType.With("supported grant types: authorization_code, " + GrantTypeTokenExchange + ", refresh_token, client_credentials")
		gt = "other"
	}
	if err != nil {
		oe := h.fail(w, r, err)
		h.exchanges.WithLabelValues(gt, oe.Code).Inc()
		return
	}
	h.exchanges.WithLabelValues(gt, "success").Inc()
	w.Header().Set("Pragma", "no-cache")
	tokenType := "Bearer"
	if is.Claims.Cnf != nil {
		tokenType = dpop.TokenType // RFC 9449 §5
	}
	res := tokenResponse{
		AccessToken: is.AccessToken, IssuedTokenType: TokenTypeAccessToken, TokenType: tokenType,
		ExpiresIn: is.ExpiresIn, RefreshToken: is.RefreshToken, Scope: is.Scope, IDToken: idToken,
	}
	if gt == GrantTypeAuthorizationCode {
		res.IssuedTokenType = "" // an RFC 8693 member only
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}

// authorizationCode is RFC 6749 §4.1.3 with RFC 7636 §4.5: the code, the
// redirect_uri it was issued for and the PKCE verifier, by the client it
// was issued to (OIDC Core §3.1.3.2).
func (h *Handler) authorizationCode(ctx context.Context, c *client, f form, b core.Binding) (*core.Issued, string, error) {
	if oe := f.require("code", "redirect_uri", "code_verifier"); oe != nil {
		return nil, "", oe
	}
	if len(c.RedirectURIs) == 0 {
		return nil, "", ErrUnauthorizedClient.With("this client has no redirect_uris: it may not use the authorization code flow")
	}
	is, idt, err := h.core.ExchangeCode(ctx, core.CodeExchange{
		ClientID: c.ID, ClientAudience: c.Audience, Code: f["code"], RedirectURI: f["redirect_uri"], Verifier: f["code_verifier"], Binding: b,
	})
	if ce := core.As(err); ce != nil && ce.Kind == core.KindDenied {
		return nil, "", ErrInvalidGrant.With("access denied by policy: " + ce.Message)
	}
	return is, idt, err
}

// exchange checks the RFC 8693 parameters and redeems the support code.
func (h *Handler) exchange(ctx context.Context, c *client, f form, b core.Binding) (*core.Issued, error) {
	if oe := f.require("subject_token", "subject_token_type", "actor_token", "actor_token_type", "tenant"); oe != nil {
		return nil, oe
	}
	switch {
	case f["subject_token_type"] != TokenTypeSupportCode:
		return nil, ErrInvalidRequest.With("subject_token_type must be " + TokenTypeSupportCode)
	case f["actor_token_type"] != TokenTypeIDToken:
		return nil, ErrInvalidRequest.With("actor_token_type must be " + TokenTypeIDToken)
	case f["requested_token_type"] != "" && f["requested_token_type"] != TokenTypeAccessToken:
		return nil, ErrInvalidRequest.With("requested_token_type must be " + TokenTypeAccessToken)
	case f["resource"] != "":
		return nil, ErrInvalidTarget.With("resource is not supported; use audience")
	}
	scope, oe := parseScope(f["scope"])
	if oe != nil {
		return nil, oe
	}
	return h.core.Redeem(ctx, core.Exchange{
		ClientID: c.ID, ClientAudience: c.Audience, Audience: f["audience"], Tenant: f["tenant"],
		Code: f["subject_token"], ActorToken: f["actor_token"], Scope: scope, Binding: b,
	})
}

// refresh is RFC 6749 §6; a policy refusal is invalid_grant there.
func (h *Handler) refresh(ctx context.Context, c *client, f form, b core.Binding) (*core.Issued, error) {
	if oe := f.require("refresh_token"); oe != nil {
		return nil, oe
	}
	scope, oe := parseScope(f["scope"])
	if oe != nil {
		return nil, oe
	}
	is, err := h.core.Refresh(ctx, core.RefreshRequest{ClientID: c.ID, Token: f["refresh_token"], Scope: scope, Binding: b})
	if ce := core.As(err); ce != nil && ce.Kind == core.KindDenied {
		return nil, ErrInvalidGrant.With("access denied by policy: " + ce.Message)
	}
	return is, err
}

// clientCredentials (RFC 6749 §4.4) gives a confidential client the bearer
// for its Shared Signals streams: scope ssf, and nothing else.
func (h *Handler) clientCredentials(w http.ResponseWriter, r *http.Request, c *client, f form) {
	switch {
	case !c.confidential():
		h.exchanges.WithLabelValues(GrantTypeClientCredentials, "unauthorized_client").Inc()
		write(w, ErrUnauthorizedClient.With("client_credentials needs a confidential client"))
		return
	case f["scope"] != core.ScopeSSF:
		h.exchanges.WithLabelValues(GrantTypeClientCredentials, "invalid_scope").Inc()
		write(w, ErrInvalidScope.With("the only scope of client_credentials is "+core.ScopeSSF))
		return
	}
	tok, ttl := h.core.IssueBearer(c.ID)
	h.exchanges.WithLabelValues(GrantTypeClientCredentials, "success").Inc()
	w.Header().Set("Pragma", "no-cache")
	httpx.WriteJSON(w, http.StatusOK, tokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: ttl, Scope: core.ScopeSSF})
}
