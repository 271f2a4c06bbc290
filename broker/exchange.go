package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/actas/actas/claims"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// tenantRE bounds tenant identifiers everywhere they enter.
var tenantRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// codeFailure is the one answer for every code that does not redeem:
// unknown, expired, used, voided or another tenant's (no oracle).
var codeFailure = errInvalidRequest.with("the support code is invalid, expired or already used")

// tokenResponse is the RFC 8693 §2.2.1 / RFC 6749 §5.1 success response.
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	RefreshToken    string `json:"refresh_token,omitempty"`
	Scope           string `json:"scope,omitempty"`
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	f, c, ok := s.oauthRequest(w, r, false)
	if !ok {
		return
	}
	var resp *tokenResponse
	var oe *oauthError
	gt := f["grant_type"]
	switch gt {
	case grantTypeTokenExchange:
		resp, oe = s.exchange(r.Context(), c, f)
	case grantTypeRefreshToken:
		resp, oe = s.refresh(r.Context(), c, f)
	case "":
		e := errInvalidRequest.with(`missing parameter "grant_type"`)
		oe = &e
	default:
		e := errUnsupportedGrantType.with("supported grant types: " + grantTypeTokenExchange + ", refresh_token")
		oe = &e
		gt = "other"
	}
	if oe != nil {
		s.metrics.exchanges.WithLabelValues(gt, oe.Code).Inc()
		writeOAuthError(w, *oe)
		return
	}
	s.metrics.exchanges.WithLabelValues(gt, "success").Inc()
	h := w.Header()
	h.Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
}

// exchange implements RFC 8693 for a support code (subject) and the
// engineer's ID token (actor). Per RFC 8693 §2.2.2 an invalid or
// unacceptable subject or actor token is invalid_request.
func (s *Server) exchange(ctx context.Context, c *client, f form) (*tokenResponse, *oauthError) {
	log := s.logger(ctx)
	if oe := f.require("subject_token", "subject_token_type", "actor_token", "actor_token_type", "tenant"); oe != nil {
		return nil, oe
	}
	if f["subject_token_type"] != tokenTypeSupportCode {
		e := errInvalidRequest.with("subject_token_type must be " + tokenTypeSupportCode)
		return nil, &e
	}
	if f["actor_token_type"] != tokenTypeIDToken {
		e := errInvalidRequest.with("actor_token_type must be " + tokenTypeIDToken)
		return nil, &e
	}
	if rt := f["requested_token_type"]; rt != "" && rt != tokenTypeAccessToken {
		e := errInvalidRequest.with("requested_token_type must be " + tokenTypeAccessToken)
		return nil, &e
	}
	if f["resource"] != "" {
		e := errInvalidTarget.with("resource is not supported; use audience")
		return nil, &e
	}
	tenant := f["tenant"]
	if !tenantRE.MatchString(tenant) {
		e := errInvalidRequest.with("tenant is not a valid tenant identifier")
		return nil, &e
	}
	audience := c.Audience
	if a := f["audience"]; a != "" {
		if !s.audiences[a] {
			e := errInvalidTarget.with("audience is not a registered product")
			return nil, &e
		}
		audience = a
	}
	pol := s.policy.Load()
	code := f["subject_token"]
	if !isDigits(code, pol.Code.Length) {
		e := errInvalidRequest.with(fmt.Sprintf("subject_token must be a %d-digit support code", pol.Code.Length))
		return nil, &e
	}
	requested, oe := parseScope(f["scope"])
	if oe != nil {
		return nil, oe
	}

	idt, idClaims, err := s.support.verify(ctx, f["actor_token"])
	if err != nil {
		if errors.Is(err, errUpstreamDown) {
			log.Error("token exchange: support IdP unreachable", "err", err)
			e := errUnavailable.with("the support identity provider is unreachable; try again")
			return nil, &e
		}
		log.Info("token exchange: actor token rejected", "err", err)
		e := errInvalidRequest.with("actor_token is not a valid ID token from the support identity provider")
		return nil, &e
	}
	eng := policy.Engineer{
		Sub: idt.Subject, Iss: idt.Issuer, Email: stringClaim(idClaims, "email"),
		Groups: stringsClaim(idClaims, s.cfg.SupportIDP.GroupsClaim),
		MFA:    slices.Contains(stringsClaim(idClaims, "amr"), "mfa"),
		Claims: idClaims,
	}
	engActor := actor{Type: storage.ActorSupportEngineer, ID: eng.Sub, Iss: eng.Iss}
	engClaims, _ := json.Marshal(idClaims)

	tn, err := s.store.Tenant(ctx, tenant)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		log.Error("token exchange: storage", "err", err)
		return nil, &errUnavailable
	}
	now := s.now()
	var issued *claims.Claims
	var refresh string
	var denied error
	params := storage.RedeemParams{
		TenantID: tenant, CodeHash: s.secrets.codeHash(tenant, code),
		Engineer: storage.Engineer{Sub: eng.Sub, Iss: eng.Iss, Email: eng.Email, Groups: eng.Groups, MFA: eng.MFA, Claims: engClaims},
		Now:      now, MaxFailures: pol.Code.MaxFailures, FailureWindow: pol.Code.RedeemWithin,
		FailureEvent: s.event(ctx, engActor, tenant, "grant.redeem", "", "failure", map[string]any{"reason": "no live code matched", "client_id": c.ID}),
		LockoutEvent: s.event(ctx, actor{Type: storage.ActorSystem, ID: "actas"}, tenant, "tenant.lockout", tenant, "success",
			map[string]any{"reason": "redemption failure limit reached", "max_failures": pol.Code.MaxFailures, "last_engineer": eng.Sub}),
	}
	g, err := s.store.Redeem(ctx, params, func(g storage.Grant) (storage.Issue, error) {
		ig, err := issuedGrant(&g, policy.Tenant{ID: tenant, SupportAccess: tn.SupportEnabled, AllowNonAdminGrants: tn.AllowNonAdminGrants}, true)
		if err != nil {
			return storage.Issue{}, err
		}
		d, err := pol.DecideRedeem(eng, ig, now)
		if err != nil {
			denied = err
			return storage.Issue{}, err
		}
		scope, err := chooseScope(d.Scopes, requested)
		if err != nil {
			denied = err
			return storage.Issue{}, err
		}
		is, cl, rt := s.mint(now, c.ID, audience, d.Role, scope, &g, pol)
		issued, refresh = cl, rt
		detail := map[string]any{"sub": g.GrantedBy, "act": eng.Sub, "role": d.Role, "client_id": c.ID, "audience": audience}
		is.Events = []storage.AuditEvent{
			s.event(ctx, engActor, tenant, "grant.redeem", g.ID, "success", detail),
			s.event(ctx, engActor, tenant, "token.issue", cl.Jti, "success", detail),
		}
		return is, nil
	})
	var rf *storage.RedeemFailure
	var pd *policy.Denied
	switch {
	case err == nil:
	case errors.As(err, &rf):
		if rf.Lockout {
			log.Warn("tenant lockout: pending codes voided", "tenant", tenant, "voided", rf.Voided)
		}
		return nil, &codeFailure
	case errors.Is(err, storage.ErrEngineerLocked):
		e := errSlowDown.with("too many failed redemptions; wait before trying again")
		return nil, &e
	case errors.As(denied, &pd):
		s.auditDenial(ctx, engActor, tenant, pd)
		e := errInvalidRequest.with("access denied by policy: " + pd.Reason)
		return nil, &e
	case errors.Is(err, errScope):
		e := errInvalidScope.with(err.Error())
		return nil, &e
	default:
		log.Error("token exchange: storage", "err", err)
		return nil, &errUnavailable
	}
	return s.respond(ctx, issued, refresh, g)
}

func (s *Server) auditDenial(ctx context.Context, a actor, tenant string, d *policy.Denied) {
	ev := s.event(ctx, a, tenant, "grant.redeem", "", "denied", map[string]any{"rule": d.Rule, "reason": d.Reason})
	if err := s.store.AppendAudit(ctx, ev); err != nil {
		s.logger(ctx).Error("audit: writing denial", "err", err)
	}
}

// mint prepares an access token's claims, its storage row and a fresh
// refresh token. exp never passes the grant's expiry.
func (s *Server) mint(now time.Time, clientID, audience, role, scope string, g *storage.Grant, pol *policy.Policy) (storage.Issue, *claims.Claims, string) {
	exp := now.Add(pol.AccessTTL)
	if g.ExpiresAt.Before(exp) {
		exp = g.ExpiresAt
	}
	cl := &claims.Claims{
		Iss: s.cfg.Issuer, Sub: g.GrantedBy, Aud: []string{audience}, ClientID: clientID,
		Exp: exp.Unix(), Iat: now.Unix(), Nbf: now.Unix(), Jti: randomToken(18),
		Act:    claims.Actor{Sub: g.EngineerSub, Iss: g.EngineerIss, Email: g.EngineerEmail},
		Tenant: g.TenantID, Roles: []string{role}, Environments: g.Environments, Resources: g.Resources,
		Scope: scope, GrantID: g.ID, GrantExp: g.ExpiresAt.Unix(), Ticket: g.Ticket,
	}
	refresh := "actas_rt_" + randomToken(32)
	rexp := now.Add(pol.RefreshTTL)
	if g.ExpiresAt.Before(rexp) {
		rexp = g.ExpiresAt
	}
	return storage.Issue{
		Token: storage.Token{JTI: cl.Jti, GrantID: g.ID, ClientID: clientID, Audience: audience, Role: role, Scope: scope,
			IssuedAt: time.Unix(cl.Iat, 0), ExpiresAt: time.Unix(cl.Exp, 0)},
		Refresh: &storage.RefreshToken{Hash: s.secrets.refreshHash(refresh), GrantID: g.ID, ClientID: clientID,
			Audience: audience, Role: role, Scope: scope, IssuedAt: now, ExpiresAt: rexp},
	}, cl, refresh
}

// respond signs committed claims. If signing fails the stored token is
// never delivered, which is harmless.
func (s *Server) respond(ctx context.Context, cl *claims.Claims, refresh string, g storage.Grant) (*tokenResponse, *oauthError) {
	tok, err := s.keys.Load().Sign(cl)
	if err != nil {
		s.logger(ctx).Error("signing access token", "err", err, "grant_id", g.ID)
		return nil, &errServer
	}
	return &tokenResponse{
		AccessToken: tok, IssuedTokenType: tokenTypeAccessToken, TokenType: "Bearer",
		ExpiresIn: cl.Exp - cl.Iat, RefreshToken: refresh, Scope: cl.Scope,
	}, nil
}

// refresh implements RFC 6749 §6 with rotation: each refresh token works
// once; presenting a used one ends the grant.
func (s *Server) refresh(ctx context.Context, c *client, f form) (*tokenResponse, *oauthError) {
	if oe := f.require("refresh_token"); oe != nil {
		return nil, oe
	}
	requested, oe := parseScope(f["scope"])
	if oe != nil {
		return nil, oe
	}
	pol := s.policy.Load()
	now := s.now()
	var issued *claims.Claims
	var refresh string
	var denied error
	reuse := s.event(ctx, actor{Type: storage.ActorSystem, ID: "actas"}, "", "grant.revoke", "", "success",
		map[string]any{"reason": "refresh_token_reuse", "client_id": c.ID})
	g, err := s.store.Refresh(ctx, s.secrets.refreshHash(f["refresh_token"]), c.ID, now, reuse,
		func(g storage.Grant, rt storage.RefreshToken) (storage.Issue, error) {
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
			is, cl, r := s.mint(now, c.ID, rt.Audience, rt.Role, scope, &g, pol)
			issued, refresh = cl, r
			a := actor{Type: storage.ActorSupportEngineer, ID: g.EngineerSub, Iss: g.EngineerIss}
			is.Events = []storage.AuditEvent{s.event(ctx, a, g.TenantID, "token.refresh", cl.Jti, "success",
				map[string]any{"sub": g.GrantedBy, "act": g.EngineerSub, "grant_id": g.ID, "client_id": c.ID})}
			return is, nil
		})
	var pd *policy.Denied
	switch {
	case err == nil:
	case errors.Is(err, storage.ErrNotFound):
		e := errInvalidGrant.with("the refresh token is invalid, expired or revoked")
		return nil, &e
	case errors.As(denied, &pd):
		e := errInvalidGrant.with("access denied by policy: " + pd.Reason)
		return nil, &e
	case errors.Is(err, errScope):
		e := errInvalidScope.with(err.Error())
		return nil, &e
	default:
		s.logger(ctx).Error("refresh: storage", "err", err)
		return nil, &errUnavailable
	}
	return s.respond(ctx, issued, refresh, g)
}

var errScope = errors.New("scope")

// chooseScope returns the requested scopes if all are allowed, or all
// allowed scopes when none were requested (RFC 6749 §3.3).
func chooseScope(allowed, requested []string) (string, error) {
	if len(requested) == 0 {
		return strings.Join(allowed, " "), nil
	}
	for _, sc := range requested {
		if !slices.Contains(allowed, sc) {
			return "", fmt.Errorf("%w: %q is not granted", errScope, sc)
		}
	}
	return strings.Join(requested, " "), nil
}

func parseScope(s string) ([]string, *oauthError) {
	if s == "" {
		return nil, nil
	}
	out := strings.Split(s, " ")
	for _, sc := range out {
		if sc == "" || len(sc) > 128 || strings.ContainsAny(sc, "\"\\") {
			e := errInvalidScope.with("scope must be space-separated scope tokens")
			return nil, &e
		}
	}
	return out, nil
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
