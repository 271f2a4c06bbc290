package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/claims"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// Issued is a signed access token with its refresh token.
type Issued struct {
	AccessToken  string
	RefreshToken string
	ExpiresIn    int64
	Scope        string
	Claims       *claims.Claims
	Grant        storage.Grant
}

// Exchange is an RFC 8693 exchange of a support code (subject) and an
// engineer's ID token (actor) by a client.
type Exchange struct {
	ClientID       string
	ClientAudience string // the client's own audience, used when Audience is ""
	Audience       string
	Tenant         string
	Code           string
	ActorToken     string
	Scope          []string // requested; none means every allowed scope
	Binding                 // the request's DPoP proof, if any
}

// Binding is the DPoP key a token request proved, if any. JKT is the
// thumbprint of the verified proof's key ("" without a proof): the access
// token is bound to it, and so is the refresh token when BindRefresh (a
// public client, RFC 9449 §5).
type Binding struct {
	JKT         string
	BindRefresh bool
}

// Redeem binds the grant of a support code to the engineer and issues an
// access token and a refresh token. Per RFC 8693 §2.2.2 an invalid or
// unacceptable subject or actor token is invalid_request: every code
// failure is the same *Error (no oracle).
func (s *Service) Redeem(ctx context.Context, x Exchange) (*Issued, error) {
	if !TenantRE.MatchString(x.Tenant) {
		return nil, fail(KindInvalid, "tenant is not a valid tenant identifier")
	}
	if x.Audience != "" && !s.audiences[x.Audience] {
		return nil, fail(KindTarget, "audience is not a registered product")
	}
	pol := s.policy.Load()
	if !isDigits(x.Code, pol.Code.Length) {
		return nil, failf(KindInvalid, "subject_token must be a %d-digit support code", pol.Code.Length)
	}
	eng, err := s.verifyEngineer(ctx, x.ActorToken)
	if err != nil {
		return nil, err
	}
	is, _, err := s.redeem(ctx, x, eng, false)
	return is, err
}

// redeem consumes x's code for eng, and issues tokens unless bindOnly (a
// redemption in the browser: the authorization code issues them later).
// The grant is returned in both cases.
func (s *Service) redeem(ctx context.Context, x Exchange, eng policy.Engineer, bindOnly bool) (*Issued, storage.Grant, error) {
	pol := s.policy.Load()
	audience := x.ClientAudience
	if x.Audience != "" {
		audience = x.Audience
	}
	engActor := audit.Actor{Type: storage.ActorSupportEngineer, ID: eng.Sub, Iss: eng.Iss}
	if err := pol.CheckEngineer(eng); err != nil {
		// Refused before any code is looked at: the answer is the same
		// for a live code and a wrong one, and nothing counts as a guess.
		return nil, storage.Grant{}, s.redeemFailure(ctx, x.Tenant, engActor, err, err)
	}
	engClaims, _ := json.Marshal(eng.Claims)

	ctx, cancel := s.bound(ctx) // after the IdP: only storage is bounded here
	defer cancel()
	now := s.now()
	var issued *claims.Claims
	var refresh string
	var denied error
	params := storage.RedeemParams{
		TenantID: x.Tenant, CodeHash: s.secrets.CodeHash(x.Tenant, x.Code),
		Engineer: storage.Engineer{Sub: eng.Sub, Iss: eng.Iss, Email: eng.Email, Groups: eng.Groups, MFA: eng.MFA, Claims: engClaims},
		Now:      now, MaxFailures: pol.Code.MaxFailures, FailureWindow: pol.Code.RedeemWithin,
		FailureEvent: s.event(engActor, x.Tenant, audit.GrantRedeem, "", audit.Failure, map[string]any{"reason": "no live code matched", "client_id": x.ClientID}),
		LockoutEvent: s.event(audit.System, x.Tenant, audit.TenantLockout, x.Tenant, audit.Success,
			map[string]any{"reason": "redemption failure limit reached", "max_failures": pol.Code.MaxFailures, "last_engineer": eng.Sub}),
	}
	g, err := s.store.Redeem(ctx, params, func(g storage.Grant, tn storage.Tenant) (storage.Issue, error) {
		ig, err := issuedGrant(&g, policy.Tenant{ID: x.Tenant, SupportAccess: tn.SupportEnabled, AllowNonAdminGrants: tn.AllowNonAdminGrants}, true)
		if err != nil {
			return storage.Issue{}, err
		}
		d, err := pol.DecideRedeem(eng, ig, now)
		if err != nil {
			denied = err
			return storage.Issue{}, err
		}
		scope, err := chooseScope(d.Scopes, x.Scope)
		if err != nil {
			denied = err
			return storage.Issue{}, err
		}
		detail := map[string]any{"sub": g.GrantedBy, "act": eng.Sub, "act_email": eng.Email, "grant_id": g.ID, "role": d.Role, "client_id": x.ClientID, "audience": audience}
		if bindOnly {
			detail["via"] = "authorize"
			return storage.Issue{Events: []storage.AuditEvent{s.event(engActor, x.Tenant, audit.GrantRedeem, g.ID, audit.Success, detail)}}, nil
		}
		is, cl, rt := s.mint(now, x.ClientID, audience, d.Role, scope, &g, pol, x.Binding)
		issued, refresh = cl, rt
		is.Events = []storage.AuditEvent{
			s.event(engActor, x.Tenant, audit.GrantRedeem, g.ID, audit.Success, detail),
			s.event(engActor, x.Tenant, audit.TokenIssue, cl.Jti, audit.Success, detail),
		}
		return is, nil
	})
	if err != nil {
		return nil, storage.Grant{}, s.redeemFailure(ctx, x.Tenant, engActor, err, denied)
	}
	if bindOnly {
		return nil, g, nil
	}
	is, err := s.sign(issued, refresh, g)
	return is, g, err
}

// verifyEngineer verifies the engineer's ID token at the support IdP and
// reads what the policy decides on.
func (s *Service) verifyEngineer(ctx context.Context, token string) (policy.Engineer, error) {
	id, err := s.support.Verify(ctx, token)
	if err != nil {
		if errors.Is(err, ErrIdPDown) {
			s.log.ErrorContext(ctx, "token exchange: support IdP unreachable", "err", err)
			return policy.Engineer{}, &Error{Kind: KindUnavailable, Message: "the support identity provider is unreachable; try again", cause: err}
		}
		s.log.InfoContext(ctx, "token exchange: actor token rejected", "err", err)
		return policy.Engineer{}, fail(KindInvalid, "actor_token is not a valid ID token from the support identity provider")
	}
	if id.Subject == "" || id.Issuer == "" {
		// OIDC Core §2: sub is REQUIRED; without it no one is accountable.
		return policy.Engineer{}, fail(KindInvalid, "actor_token has no subject (sub)")
	}
	return s.engineer(id), nil
}

// engineer reads what the policy decides on from an engineer's verified
// ID token.
func (s *Service) engineer(id Identity) policy.Engineer {
	return policy.Engineer{
		Sub: id.Subject, Iss: id.Issuer, Email: StringClaim(id.Claims, "email"),
		Groups: StringsClaim(id.Claims, s.cfg.SupportIDP.GroupsClaim),
		MFA:    slices.Contains(StringsClaim(id.Claims, "amr"), "mfa"),
		Claims: id.Claims,
	}
}

// redeemFailure maps a redemption that issued nothing to the caller's
// answer: err from storage, denied from the policy inside the transaction.
func (s *Service) redeemFailure(ctx context.Context, tenant string, eng audit.Actor, err, denied error) error {
	var rf *storage.RedeemFailure
	var pd *policy.Denied
	var se *Error
	switch {
	case errors.As(err, &rf):
		if rf.Lockout {
			s.log.WarnContext(ctx, "tenant lockout: pending codes voided", "tenant", tenant, "voided", rf.Voided)
			if s.lockouts != nil {
				s.lockouts.Inc()
			}
		}
		return errCode
	case errors.Is(err, storage.ErrEngineerLocked):
		return fail(KindLocked, "too many failed redemptions; wait before trying again")
	case errors.As(denied, &pd):
		s.appendAudit(ctx, s.event(eng, tenant, audit.GrantRedeem, "", audit.Denied, map[string]any{"rule": pd.Rule, "reason": pd.Reason}))
		return &Error{Kind: KindDenied, Message: pd.Reason, Rule: pd.Rule}
	case errors.As(denied, &se):
		return se
	}
	return unavailable(err)
}

// mint prepares an access token's claims, its storage row and a fresh
// refresh token. exp never passes the grant's expiry (invariant 1).
func (s *Service) mint(now time.Time, clientID, audience, role, scope string, g *storage.Grant, pol *policy.Policy, b Binding) (storage.Issue, *claims.Claims, string) {
	exp := now.Add(pol.AccessTTL)
	if g.ExpiresAt.Before(exp) {
		exp = g.ExpiresAt
	}
	cl := &claims.Claims{
		Iss: s.cfg.Issuer, Sub: g.GrantedBy, Aud: []string{audience}, ClientID: clientID,
		Exp: exp.Unix(), Iat: now.Unix(), Nbf: now.Unix(), Jti: sortableID(now, 15),
		Act:    claims.Actor{Sub: g.EngineerSub, Iss: g.EngineerIss, Email: g.EngineerEmail},
		Tenant: g.TenantID, Roles: []string{role}, Environments: g.Environments, Resources: g.Resources,
		Scope: scope, GrantID: g.ID, GrantExp: g.ExpiresAt.Unix(), Ticket: g.Ticket,
	}
	if b.JKT != "" {
		cl.Cnf = &claims.Confirmation{JKT: b.JKT}
	}
	refreshJKT := ""
	if b.BindRefresh {
		refreshJKT = b.JKT
	}
	refresh := newRefreshToken(now)
	rexp := now.Add(pol.RefreshTTL)
	if g.ExpiresAt.Before(rexp) {
		rexp = g.ExpiresAt
	}
	return storage.Issue{
		Token: storage.Token{JTI: cl.Jti, GrantID: g.ID, ClientID: clientID, Audience: audience, Role: role, Scope: scope,
			IssuedAt: time.Unix(cl.Iat, 0), ExpiresAt: time.Unix(cl.Exp, 0), JKT: b.JKT},
		Refresh: &storage.RefreshToken{Hash: s.refreshKey(refresh), GrantID: g.ID, ClientID: clientID,
			Audience: audience, Role: role, Scope: scope, IssuedAt: now, ExpiresAt: rexp, JKT: refreshJKT},
	}, cl, refresh
}

// sign signs committed claims. If signing fails the stored token is never
// delivered, which is harmless.
func (s *Service) sign(cl *claims.Claims, refresh string, g storage.Grant) (*Issued, error) {
	tok, err := s.keys.KeySet().Sign(cl)
	if err != nil {
		return nil, fmt.Errorf("signing access token of grant %s: %w", g.ID, err)
	}
	return &Issued{AccessToken: tok, RefreshToken: refresh, ExpiresIn: cl.Exp - cl.Iat, Scope: cl.Scope, Claims: cl, Grant: g}, nil
}

// RefreshRequest is an RFC 6749 §6 refresh by a client.
type RefreshRequest struct {
	ClientID string
	Token    string
	Scope    []string // requested; none means the previous scope
	Binding           // the request's DPoP proof, if any
}

var errBoundRefresh = fail(KindProof, "the refresh token is bound to a DPoP key: send a proof made with that key")

// Refresh implements RFC 6749 §6 with rotation: each refresh token works
// once; presenting a used one ends the grant (RFC 9700 §4.14.2). A refresh
// token bound to a DPoP key needs a proof with that key (RFC 9449 §5); a
// mismatch consumes nothing.
func (s *Service) Refresh(ctx context.Context, r RefreshRequest) (*Issued, error) {
	clientID, token, requested := r.ClientID, r.Token, r.Scope
	ctx, cancel := s.bound(ctx)
	defer cancel()
	pol := s.policy.Load()
	now := s.now()
	var issued *claims.Claims
	var refresh string
	var denied error
	reuse := s.event(audit.System, "", audit.GrantRevoke, "", audit.Success,
		map[string]any{"reason": "refresh_token_reuse", "client_id": clientID})
	g, err := s.store.Refresh(ctx, s.refreshKey(token), clientID, now, reuse,
		func(g storage.Grant, rt storage.RefreshToken) (storage.Issue, error) {
			if rt.JKT != "" && rt.JKT != r.JKT {
				denied = errBoundRefresh
				return storage.Issue{}, errBoundRefresh
			}
			eng, ig, err := decisionInputs(&g, policy.Tenant{ID: g.TenantID, SupportAccess: true}, true)
			if err != nil {
				return storage.Issue{}, err
			}
			if err := pol.StillAllows(eng, ig, rt.Role, now); err != nil {
				denied = err
				return storage.Issue{}, err
			}
			// Never wider than before: the old token's scope, narrowed by
			// today's policy, narrowed by the request.
			allowed := strings.Fields(narrowScope(rt.Scope, pol.Scopes(rt.Role)))
			scope, err := chooseScope(allowed, requested)
			if err != nil {
				denied = err
				return storage.Issue{}, err
			}
			is, cl, newRefresh := s.mint(now, clientID, rt.Audience, rt.Role, scope, &g, pol, r.Binding)
			is.Token.SID, is.Refresh.SID = rt.SID, rt.SID // still the session it began in
			issued, refresh = cl, newRefresh
			a := audit.Actor{Type: storage.ActorSupportEngineer, ID: g.EngineerSub, Iss: g.EngineerIss}
			is.Events = []storage.AuditEvent{s.event(a, g.TenantID, audit.TokenRefresh, cl.Jti, audit.Success,
				map[string]any{"sub": g.GrantedBy, "act": g.EngineerSub, "act_email": g.EngineerEmail, "grant_id": g.ID, "client_id": clientID})}
			return is, nil
		})
	var pd *policy.Denied
	var se *Error
	switch {
	case err == nil:
	case errors.Is(err, storage.ErrNotFound):
		return nil, fail(KindGrant, "the refresh token is invalid, expired or revoked")
	case errors.As(denied, &pd):
		return nil, &Error{Kind: KindDenied, Message: pd.Reason, Rule: pd.Rule}
	case errors.As(denied, &se):
		return nil, se
	default:
		return nil, unavailable(err)
	}
	return s.sign(issued, refresh, g)
}

// chooseScope returns the requested scopes if all are allowed, or all
// allowed scopes when none were requested (RFC 6749 §3.3).
func chooseScope(allowed, requested []string) (string, error) {
	if len(requested) == 0 {
		return strings.Join(allowed, " "), nil
	}
	for _, sc := range requested {
		if !slices.Contains(allowed, sc) {
			return "", failf(KindScope, "scope: %q is not granted", sc)
		}
	}
	return strings.Join(requested, " "), nil
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

func isDigits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
