package core

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/claims"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// Introspection is the RFC 7662 answer for an active token: the access
// token's claim set, rebuilt from stored state, plus active and token_type.
type Introspection struct {
	Active    bool   `json:"active"`
	TokenType string `json:"token_type"`
	claims.Claims
}

// Introspect returns nil for any token that is not active for the client
// (clientID, audience): bad signature, wrong audience, expired, unknown,
// revoked, grant ended or expired, tenant support off, or no longer allowed
// by the policy in force. An error means storage could not answer; it
// never answers active from stale state.
func (s *Service) Introspect(ctx context.Context, clientID, audience, token string) (*Introspection, error) {
	now := s.now()
	cl, err := s.keys.KeySet().Verify(token, claims.VerifyOptions{Issuer: s.cfg.Issuer, Audience: audience, Now: now, Leeway: s.skew})
	if err != nil {
		return nil, nil
	}
	return s.live(ctx, clientID, audience, cl, now)
}

// live re-checks a verified token against stored state and the policy in
// force, and rebuilds its claims from that state; nil if not active.
// audience "" accepts the token's own; clientID "" records no usage.
func (s *Service) live(ctx context.Context, clientID, audience string, cl *claims.Claims, now time.Time) (*Introspection, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	st, err := s.store.TokenState(ctx, cl.Jti)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable(err)
	}
	t, g := &st.Token, &st.Grant
	if !t.RevokedAt.IsZero() || !now.Before(t.ExpiresAt) || !slices.Contains(cl.Aud, t.Audience) || (audience != "" && t.Audience != audience) ||
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
	if clientID != "" {
		s.noteIntrospection(ctx, clientID, &st)
	}
	in := &Introspection{Active: true, TokenType: "Bearer", Claims: claims.Claims{
		Iss: s.cfg.Issuer, Sub: g.GrantedBy, Aud: []string{t.Audience}, ClientID: t.ClientID,
		Exp: t.ExpiresAt.Unix(), Iat: t.IssuedAt.Unix(), Nbf: t.IssuedAt.Unix(), Jti: t.JTI,
		Act:    claims.Actor{Sub: g.EngineerSub, Iss: g.EngineerIss, Email: g.EngineerEmail},
		Tenant: g.TenantID, Roles: []string{t.Role}, Environments: g.Environments, Resources: g.Resources,
		Scope:   narrowScope(t.Scope, pol.Scopes(t.Role)),
		GrantID: g.ID, GrantExp: g.ExpiresAt.Unix(), Ticket: g.Ticket,
	}}
	if t.JKT != "" {
		// RFC 9449 §6.2: a bound token introspects with its key and type.
		in.TokenType, in.Cnf = "DPoP", &claims.Confirmation{JKT: t.JKT}
	}
	return in, nil
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
func (s *Service) cachedInputs(g *storage.Grant, withClaims bool) (policy.Engineer, policy.IssuedGrant, error) {
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

var errNotYours = fail(KindClient, "the token was not issued to this client")

// RevokeAccess revokes an access token issued to the client or meant for
// its audience (a resource server may revoke tokens presented to it).
// An invalid or expired token is nothing to revoke (RFC 7009 §2.2).
func (s *Service) RevokeAccess(ctx context.Context, clientID, audience, token string) error {
	cl, err := s.keys.KeySet().Verify(token, claims.VerifyOptions{Issuer: s.cfg.Issuer, SkipAudienceCheck: true, Now: s.now(), Leeway: s.skew})
	if err != nil {
		return nil
	}
	if cl.ClientID != clientID && !slices.Contains(cl.Aud, audience) {
		return errNotYours
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ev := s.event(audit.Actor{Type: storage.ActorClient, ID: clientID}, cl.Tenant, audit.TokenRevoke, cl.Jti, audit.Success,
		map[string]any{"sub": cl.Sub, "act": cl.Act.Sub, "grant_id": cl.GrantID})
	if _, err := s.store.RevokeToken(ctx, cl.Jti, s.now(), ev); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return unavailable(err)
	}
	return nil
}

// RevokeRefresh ends the grant of a refresh token issued to the client:
// the engineer is done (RFC 7009 §2.1: revoke the tokens of the same
// grant). An unknown token is nothing to revoke.
func (s *Service) RevokeRefresh(ctx context.Context, clientID, token string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rt, g, err := s.store.RefreshGrant(ctx, s.refreshKey(token))
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return unavailable(err)
	}
	if rt.ClientID != clientID {
		return errNotYours
	}
	by := audit.Actor{Type: storage.ActorSupportEngineer, ID: g.EngineerSub, Iss: g.EngineerIss}
	return s.EndGrant(ctx, g, by, "refresh_token_revoked", map[string]any{"client_id": clientID})
}

// LooksLikeJWT tells an access token (a compact JWS) from a refresh token.
func LooksLikeJWT(token string) bool { return strings.Count(token, ".") == 2 }
