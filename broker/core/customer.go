package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// TenantRE bounds tenant identifiers everywhere they enter.
var TenantRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Customer is an authenticated customer user: tenant and role come from
// their token's claims, as the issuer's config says.
type Customer struct {
	Sub, Iss, Tenant, Role, Email string
	Claims                        map[string]any
	Admin                         bool
}

// Actor is the customer as an audit actor.
func (c *Customer) Actor() audit.Actor {
	t := storage.ActorCustomerUser
	if c.Admin {
		t = storage.ActorTenantAdmin
	}
	return audit.Actor{Type: t, ID: c.Sub, Iss: c.Iss}
}

var errUnauthenticated = coded(KindUnauthenticated, "unauthorized", "a valid bearer token from a configured customer issuer is required")

// AuthenticateCustomer verifies a bearer token of a configured customer
// issuer and reads the user's tenant and role from it.
func (s *Service) AuthenticateCustomer(ctx context.Context, token string) (*Customer, error) {
	ci := s.customers[unverifiedIssuer(token)]
	if ci == nil {
		return nil, errUnauthenticated
	}
	id, err := ci.v.Verify(ctx, token)
	if err != nil {
		if errors.Is(err, ErrIdPDown) {
			s.log.ErrorContext(ctx, "customer IdP unreachable", "issuer", ci.Issuer, "err", err)
			return nil, &Error{Kind: KindUnavailable, Message: "the customer identity provider is unreachable; try again", cause: err}
		}
		s.log.InfoContext(ctx, "customer token rejected", "err", err)
		return nil, errUnauthenticated
	}
	return s.customerFrom(ctx, ci, id, true)
}

// customerFrom reads a customer from a verified ID token of ci. A fresh
// token's role is noted (a lower one than last seen is a demotion); a
// session's snapshot is not fresh, so a role changed since sign-in, or a
// deactivation, refuses it instead: only a fresh token may say more.
func (s *Service) customerFrom(ctx context.Context, ci *customerIssuer, id Identity, fresh bool) (*Customer, error) {
	cu := &Customer{Sub: id.Subject, Iss: id.Issuer, Tenant: StringClaim(id.Claims, ci.TenantClaim),
		Role: StringClaim(id.Claims, ci.RoleClaim), Email: StringClaim(id.Claims, "email"), Claims: id.Claims}
	if cu.Sub == "" {
		// Without a subject two users would share one identity and the
		// audit would name no one.
		return nil, coded(KindUnauthenticated, "unauthorized", "the token has no subject (sub)")
	}
	if !TenantRE.MatchString(cu.Tenant) || cu.Role == "" {
		return nil, coded(KindUnauthenticated, "unauthorized", fmt.Sprintf("the token lacks a valid %q or %q claim", ci.TenantClaim, ci.RoleClaim))
	}
	cu.Admin = s.policy.Load().IsGranter(cu.Role)
	if err := s.checkTenantIssuer(ctx, cu); err != nil {
		return nil, err
	}
	if fresh {
		if err := s.noteRole(ctx, cu); err != nil {
			return nil, err
		}
	} else if err := s.sameRole(ctx, cu); err != nil {
		return nil, err
	}
	if cu.Admin && cu.Email != "" {
		s.seeAdmin(ctx, cu)
	}
	return cu, nil
}

var errRoleChanged = coded(KindUnauthenticated, "unauthorized", "your role or account changed since you signed in; sign in again")

// sameRole refuses a session whose user's known role is no longer the one
// they signed in with (a directory change, or a fresher token).
func (s *Service) sameRole(ctx context.Context, cu *Customer) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	known, err := s.store.KnownRole(ctx, cu.Tenant, cu.Sub, cu.Iss)
	if err != nil {
		return unavailable(err)
	}
	if known != cu.Role {
		return errRoleChanged
	}
	return nil
}

// errTenantBound refuses a token of one configured customer issuer for a
// tenant another issuer enabled: with several customer_idps, a tenant id
// is not a name any of them may claim.
var errTenantBound = coded(KindForbidden, "tenant_bound",
	"this tenant is bound to another identity provider: sign in with the one that enabled support access for it")

// checkTenantIssuer refuses cu if its tenant is bound to another issuer.
func (s *Service) checkTenantIssuer(ctx context.Context, cu *Customer) error {
	if len(s.customers) < 2 {
		return nil // one issuer: nothing else can claim the tenant
	}
	t, err := s.Tenant(ctx, cu.Tenant)
	if err != nil {
		return err
	}
	if t.Issuer != "" && t.Issuer != cu.Iss {
		s.log.WarnContext(ctx, "customer token for a tenant bound to another issuer", "tenant", cu.Tenant, "issuer", cu.Iss, "bound_to", t.Issuer)
		return errTenantBound
	}
	return nil
}

// seeAdmin records an admin's address from their own token (for
// notifications), at most once an hour per admin and address.
func (s *Service) seeAdmin(ctx context.Context, cu *Customer) {
	if _, err := mail.ParseAddress(cu.Email); err != nil || len(cu.Email) > 254 {
		return
	}
	key := cu.Tenant + "\x00" + cu.Sub + "\x00" + cu.Email
	now := s.now()
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if last, ok := s.seenAdmins.Get(key); ok && now.Sub(last) < time.Hour {
		return
	}
	if err := s.store.SeeAdmin(ctx, cu.Tenant, cu.Sub, cu.Email, now); err != nil {
		s.log.WarnContext(ctx, "recording admin address", "err", err)
		return
	}
	s.seenAdmins.Put(key, now)
}

// upstreamAlgs are the JWS algorithms accepted on upstream tokens.
var upstreamAlgs = []jose.SignatureAlgorithm{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// unverifiedIssuer reads iss from a JWT without verifying it, only to pick
// which configured issuer must verify it.
func unverifiedIssuer(raw string) string {
	if strings.Count(raw, ".") != 2 || len(raw) > 16384 {
		return ""
	}
	payload, err := jose.ParseSignedCompact(raw, upstreamAlgs)
	if err != nil {
		return ""
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(payload.UnsafePayloadWithoutVerification(), &c) != nil {
		return ""
	}
	return c.Iss
}

// StringClaim returns a string claim, or "".
func StringClaim(c map[string]any, name string) string {
	s, _ := c[name].(string)
	return s
}

// StringsClaim returns a claim that is a list of strings or one string.
func StringsClaim(c map[string]any, name string) []string {
	switch v := c[name].(type) {
	case string:
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// Tenant reads a tenant; one never stored has support access off.
func (s *Service) Tenant(ctx context.Context, id string) (storage.Tenant, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	t, err := s.store.Tenant(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Tenant{ID: id}, nil
	}
	if err != nil {
		return t, unavailable(err)
	}
	return t, nil
}

// SetSupportAccess turns the tenant's support access on or off (and, when
// allowNonAdmin is set, whether non-admins may grant). Turning it off ends
// every live grant of the tenant at once; it returns how many.
func (s *Service) SetSupportAccess(ctx context.Context, cu *Customer, enabled bool, allowNonAdmin *bool) (storage.Tenant, int, error) {
	if !cu.Admin {
		return storage.Tenant{}, 0, coded(KindForbidden, "forbidden", "only tenant admins may change support access")
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	prev, err := s.Tenant(ctx, cu.Tenant)
	if err != nil {
		return prev, 0, err
	}
	next := storage.Tenant{ID: cu.Tenant, SupportEnabled: enabled, AllowNonAdminGrants: prev.AllowNonAdminGrants,
		ChangedBy: cu.Sub, ChangedAt: s.now().UTC(), Issuer: cu.Iss}
	if allowNonAdmin != nil {
		next.AllowNonAdminGrants = *allowNonAdmin
	}
	if next.SupportEnabled {
		// The rules govern turning access on, as they govern grants (a
		// free-plan admin who may not grant may not open the door either).
		err := s.policy.Load().DecideToggle(policy.ToggleRequest{
			Granter: policy.Granter{Sub: cu.Sub, Role: cu.Role, Claims: cu.Claims},
			Tenant:  policy.Tenant{ID: cu.Tenant, SupportAccess: true, AllowNonAdminGrants: next.AllowNonAdminGrants},
			Now:     s.now(),
		})
		var pd *policy.Denied
		if errors.As(err, &pd) {
			s.appendAudit(ctx, s.event(cu.Actor(), cu.Tenant, audit.SupportEnable, cu.Tenant, audit.Denied,
				map[string]any{"rule": pd.Rule, "reason": pd.Reason}))
			return prev, 0, &Error{Kind: KindDenied, Message: pd.Reason, Rule: pd.Rule}
		}
	}
	action := audit.SupportUpdate
	switch {
	case next.SupportEnabled && !prev.SupportEnabled:
		action = audit.SupportEnable
	case !next.SupportEnabled && prev.SupportEnabled:
		action = audit.SupportDisable
	}
	ev := s.event(cu.Actor(), cu.Tenant, action, cu.Tenant, audit.Success, map[string]any{
		"enabled": next.SupportEnabled, "allow_non_admin_grants": next.AllowNonAdminGrants,
		"previous": map[string]any{"enabled": prev.SupportEnabled, "allow_non_admin_grants": prev.AllowNonAdminGrants},
	})
	ended := s.event(cu.Actor(), cu.Tenant, audit.GrantRevoke, "", audit.Success, map[string]any{"reason": "support_access_disabled"})
	n, err := s.store.SetSupportAccess(ctx, next, ev, ended)
	if errors.Is(err, storage.ErrConflict) {
		return prev, 0, errTenantBound
	}
	if err != nil {
		return next, 0, unavailable(err)
	}
	return next, n, nil
}
