package broker

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gorilla/mux"

	"github.com/actas/actas/claims"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// Token type and grant type URIs (RFC 8693 §3, and actas's own code type).
const (
	grantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	grantTypeRefreshToken  = "refresh_token"
	tokenTypeSupportCode   = "urn:actas:params:oauth:token-type:support-code"
	tokenTypeIDToken       = "urn:ietf:params:oauth:token-type:id_token"
	tokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
)

func (s *Server) mountOAuth(r *mux.Router) {
	r.HandleFunc("/.well-known/openid-configuration", s.handleDiscovery).Methods(http.MethodGet)
	r.HandleFunc("/.well-known/oauth-authorization-server", s.handleDiscovery).Methods(http.MethodGet)
	r.HandleFunc("/jwks", s.handleJWKS).Methods(http.MethodGet)
	// Methods are checked by parseForm so that a wrong method still gets
	// an RFC 6749 error body.
	r.HandleFunc("/token", s.handleToken)
	r.HandleFunc("/introspect", s.handleIntrospect)
	r.HandleFunc("/revoke", s.handleRevoke)
}

// handleDiscovery serves RFC 8414 / OIDC Discovery metadata listing what
// this server implements and nothing it does not.
func (s *Server) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	iss := s.cfg.Issuer
	authMethods := []string{"client_secret_basic", "client_secret_post"}
	scopes := map[string]bool{}
	pol := s.policy.Load()
	for _, role := range pol.Roles() {
		for _, sc := range pol.Scopes(role.Name) {
			scopes[sc] = true
		}
	}
	scopeList := make([]string, 0, len(scopes))
	for sc := range scopes {
		scopeList = append(scopeList, sc)
	}
	slices.Sort(scopeList)
	doc := map[string]any{
		"issuer":                                iss,
		"jwks_uri":                              iss + "/jwks",
		"token_endpoint":                        iss + "/token",
		"introspection_endpoint":                iss + "/introspect",
		"revocation_endpoint":                   iss + "/revoke",
		"grant_types_supported":                 []string{grantTypeTokenExchange, grantTypeRefreshToken},
		"response_types_supported":              []string{},
		"scopes_supported":                      scopeList,
		"token_endpoint_auth_methods_supported": append([]string{"none"}, authMethods...),
		"introspection_endpoint_auth_methods_supported": authMethods,
		"revocation_endpoint_auth_methods_supported":    append([]string{"none"}, authMethods...),
		"subject_types_supported":                       []string{"public"},
		"id_token_signing_alg_values_supported":         s.keys.Load().Algorithms(),
		"claims_supported": []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "act",
			"tenant", "roles", "environments", "resources", "scope", "grant_id", "grant_exp", "ticket"},
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(doc)
}

func (s *Server) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Write(s.keys.Load().JWKS())
}

var errClientAuth = errInvalidClient.with("client authentication failed")

// oauthRequest parses an OAuth endpoint's form and authenticates the
// client, writing the RFC 6749 error itself when either fails.
func (s *Server) oauthRequest(w http.ResponseWriter, r *http.Request, requireSecret bool) (form, *client, bool) {
	f, oe := parseForm(r)
	if oe == nil {
		var c *client
		if c, oe = s.authenticateClient(r, f, requireSecret); oe == nil {
			return f, c, true
		}
	}
	writeOAuthError(w, *oe)
	return nil, nil, false
}

// authenticateClient implements RFC 6749 §2.3.1 (client_secret_basic and
// client_secret_post, never both) and public clients identified by
// client_id (§2.1). Unknown client and wrong secret get the same answer.
func (s *Server) authenticateClient(r *http.Request, f form, requireSecret bool) (*client, *oauthError) {
	id, secret, basic := r.BasicAuth()
	if basic {
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return nil, &errClientAuth
		}
		if f["client_secret"] != "" {
			e := errInvalidRequest.with("use one client authentication method, not both")
			return nil, &e
		}
		if f["client_id"] != "" && f["client_id"] != id {
			e := errInvalidRequest.with("client_id does not match the authenticated client")
			return nil, &e
		}
	} else {
		id, secret = f["client_id"], f["client_secret"]
	}
	if id == "" {
		e := errInvalidClient.with("client authentication is required")
		return nil, &e
	}
	c, ok := s.clients[id]
	if !ok {
		return nil, &errClientAuth
	}
	switch {
	case c.confidential() && !c.checkSecret(secret):
		return nil, &errClientAuth
	case !c.confidential() && secret != "":
		return nil, &errClientAuth
	case !c.confidential() && requireSecret:
		e := errInvalidClient.with("this endpoint requires an authenticated (confidential) client")
		return nil, &e
	}
	return c, nil
}

var inactive = []byte(`{"active":false}` + "\n")

// introspection is the RFC 7662 response for an active token: the access
// token's claim set, rebuilt from stored state, plus active and token_type.
type introspection struct {
	Active    bool   `json:"active"`
	TokenType string `json:"token_type"`
	claims.Claims
}

func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	f, c, ok := s.oauthRequest(w, r, true)
	if !ok {
		return
	}
	if !c.CanIntrospect {
		writeOAuthError(w, errUnauthorizedClient.with("this client may not introspect tokens"))
		return
	}
	if oe := f.require("token"); oe != nil {
		writeOAuthError(w, *oe)
		return
	}
	resp, err := s.introspect(r.Context(), c, f["token"])
	if err != nil {
		s.logger(r.Context()).Error("introspection: storage", "err", err)
		writeOAuthError(w, errUnavailable)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if resp == nil {
		s.metrics.introspection.WithLabelValues("false").Inc()
		w.Write(inactive)
		return
	}
	s.metrics.introspection.WithLabelValues("true").Inc()
	json.NewEncoder(w).Encode(resp)
}

// introspect returns nil for any token that is not active for client c:
// bad signature, wrong audience, expired, unknown, revoked, grant ended or
// expired, tenant support off, or no longer allowed by the policy in force.
// An error means storage could not answer; never answer active from stale
// state.
func (s *Server) introspect(ctx context.Context, c *client, token string) (*introspection, error) {
	now := s.now()
	cl, err := s.keys.Load().Verify(token, claims.VerifyOptions{Issuer: s.cfg.Issuer, Audience: c.Audience, Now: now, Leeway: s.skew})
	if err != nil {
		return nil, nil
	}
	st, err := s.store.TokenState(ctx, cl.Jti)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t, g := &st.Token, &st.Grant
	if !t.RevokedAt.IsZero() || !now.Before(t.ExpiresAt) || t.Audience != c.Audience ||
		!g.RevokedAt.IsZero() || !now.Before(g.ExpiresAt) || !st.TenantEnabled ||
		g.TenantID != cl.Tenant || g.GrantedBy != cl.Sub {
		return nil, nil
	}
	pol := s.policy.Load()
	eng, ig, err := s.cachedInputs(g, pol.RuleCount() > 0)
	if err != nil {
		return nil, err
	}
	ig.Tenant = policy.Tenant{ID: g.TenantID, SupportAccess: true, AllowNonAdminGrants: st.AllowNonAdminGrants}
	if pol.StillAllows(eng, ig, t.Role, now) != nil {
		return nil, nil
	}
	s.noteIntrospection(ctx, c, &st, now)
	return &introspection{Active: true, TokenType: "Bearer", Claims: claims.Claims{
		Iss: s.cfg.Issuer, Sub: g.GrantedBy, Aud: []string{t.Audience}, ClientID: t.ClientID,
		Exp: t.ExpiresAt.Unix(), Iat: t.IssuedAt.Unix(), Nbf: t.IssuedAt.Unix(), Jti: t.JTI,
		Act:    claims.Actor{Sub: g.EngineerSub, Iss: g.EngineerIss, Email: g.EngineerEmail},
		Tenant: g.TenantID, Roles: []string{t.Role}, Environments: g.Environments, Resources: g.Resources,
		Scope:   narrowScope(t.Scope, pol.Scopes(t.Role)),
		GrantID: g.ID, GrantExp: g.ExpiresAt.Unix(), Ticket: g.Ticket,
	}}, nil
}

// narrowScope keeps the scopes of issued that the policy still allows:
// tightening a policy narrows live tokens, loosening never widens them.
func narrowScope(issued string, allowed []string) string {
	var out []string
	for _, sc := range strings.Fields(issued) {
		if slices.Contains(allowed, sc) {
			out = append(out, sc)
		}
	}
	return strings.Join(out, " ")
}

// issuedGrant converts a stored grant for policy decisions; the granter's
// claims are decoded only when rules may read them.
func issuedGrant(g *storage.Grant, t policy.Tenant, withClaims bool) (policy.IssuedGrant, error) {
	var gc map[string]any
	if withClaims && len(g.GranterClaims) > 0 {
		if err := json.Unmarshal(g.GranterClaims, &gc); err != nil {
			return policy.IssuedGrant{}, errors.New("corrupt granter claims in storage")
		}
	}
	return policy.IssuedGrant{
		Tenant:  t,
		Granter: policy.Granter{Sub: g.GrantedBy, Role: g.GranterRole, Claims: gc},
		Role:    g.Role, Environments: g.Environments, Resources: g.Resources, Ticket: g.Ticket,
		Tick:      policy.Ticket{System: g.TicketSystem, Severity: g.TicketSeverity},
		CreatedAt: g.CreatedAt, ExpiresAt: g.ExpiresAt,
	}, nil
}

type inputs struct {
	eng policy.Engineer
	ig  policy.IssuedGrant
}

// cachedInputs is decisionInputs for introspection. The claim snapshots of
// a redeemed grant never change, so they are decoded once per grant; the
// parts that can change (revocation, expiry, the tenant) come from storage
// on every call and are not part of the cached value.
func (s *Server) cachedInputs(g *storage.Grant, withClaims bool) (policy.Engineer, policy.IssuedGrant, error) {
	if !withClaims {
		return decisionInputs(g, policy.Tenant{}, false)
	}
	if in, ok := s.inputs.Get(g.ID); ok && in.ig.ExpiresAt.Equal(g.ExpiresAt) && in.eng.Sub == g.EngineerSub {
		return in.eng, in.ig, nil
	}
	eng, ig, err := decisionInputs(g, policy.Tenant{}, true)
	if err == nil {
		s.inputs.Put(g.ID, inputs{eng, ig})
	}
	return eng, ig, err
}

// decisionInputs rebuilds the engineer and grant of a redeemed grant, for
// re-deciding its tokens under the policy in force.
func decisionInputs(g *storage.Grant, t policy.Tenant, withClaims bool) (policy.Engineer, policy.IssuedGrant, error) {
	ig, err := issuedGrant(g, t, withClaims)
	if err != nil {
		return policy.Engineer{}, ig, err
	}
	e := policy.Engineer{Sub: g.EngineerSub, Iss: g.EngineerIss, Email: g.EngineerEmail, Groups: g.EngineerGroups, MFA: g.EngineerMFA}
	if withClaims && len(g.EngineerClaims) > 0 {
		if err := json.Unmarshal(g.EngineerClaims, &e.Claims); err != nil {
			return e, ig, errors.New("corrupt engineer claims in storage")
		}
	}
	return e, ig, nil
}

// handleRevoke implements RFC 7009. An access token ends itself; a refresh
// token ends its whole grant (RFC 7009 §2.1: revoke the tokens of the same
// grant). Unknown or invalid tokens answer 200; storage failures 503.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	f, c, ok := s.oauthRequest(w, r, false)
	if !ok {
		return
	}
	if oe := f.require("token"); oe != nil {
		writeOAuthError(w, *oe)
		return
	}
	switch hint := f["token_type_hint"]; hint {
	case "", "access_token", "refresh_token":
	default:
		writeOAuthError(w, oauthError{Code: "unsupported_token_type", Description: "token_type_hint must be access_token or refresh_token", status: http.StatusBadRequest})
		return
	}
	ctx := r.Context()
	var err error
	var oerr *oauthError
	if strings.Count(f["token"], ".") == 2 {
		oerr, err = s.revokeAccess(ctx, c, f["token"])
	} else {
		oerr, err = s.revokeRefresh(ctx, c, f["token"])
	}
	if err != nil {
		s.logger(ctx).Error("revocation: storage", "err", err)
		writeOAuthError(w, errUnavailable)
		return
	}
	if oerr != nil {
		writeOAuthError(w, *oerr)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// revokeAccess revokes an access token issued to c or meant for c's
// audience (a resource server may revoke tokens presented to it).
func (s *Server) revokeAccess(ctx context.Context, c *client, token string) (*oauthError, error) {
	cl, err := s.keys.Load().Verify(token, claims.VerifyOptions{Issuer: s.cfg.Issuer, SkipAudienceCheck: true, Now: s.now(), Leeway: s.skew})
	if err != nil {
		return nil, nil // invalid or expired: nothing to revoke (RFC 7009 §2.2)
	}
	if cl.ClientID != c.ID && !slices.Contains(cl.Aud, c.Audience) {
		e := errUnauthorizedClient.with("the token was not issued to this client")
		return &e, nil
	}
	ev := s.event(ctx, actor{Type: storage.ActorClient, ID: c.ID}, cl.Tenant, "token.revoke", cl.Jti, "success",
		map[string]any{"sub": cl.Sub, "act": cl.Act.Sub, "grant_id": cl.GrantID})
	_, err = s.store.RevokeToken(ctx, cl.Jti, s.now(), ev)
	return nil, err
}

// revokeRefresh ends the grant of a refresh token issued to c: the engineer
// is done.
func (s *Server) revokeRefresh(ctx context.Context, c *client, token string) (*oauthError, error) {
	rt, g, err := s.store.RefreshGrant(ctx, s.secrets.refreshHash(token))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if rt.ClientID != c.ID {
		e := errUnauthorizedClient.with("the token was not issued to this client")
		return &e, nil
	}
	ev := s.event(ctx, actor{Type: storage.ActorSupportEngineer, ID: g.EngineerSub, Iss: g.EngineerIss}, g.TenantID, "grant.revoke", g.ID, "success",
		map[string]any{"reason": "refresh_token_revoked", "sub": g.GrantedBy, "act": g.EngineerSub, "client_id": c.ID})
	_, err = s.store.RevokeGrant(ctx, g.TenantID, g.ID, s.now(), g.EngineerSub, "revoked_by_engineer", ev)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	return nil, err
}
