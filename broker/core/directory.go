package core

import (
	"context"
	"errors"
	"strings"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

// The customer's directory (SCIM) and the live permission ceiling: what a
// customer user may still grant follows what their directory and their
// freshest token say, for grants already made too.

// CreateSCIMToken makes a tenant's SCIM bearer; admins only. The token is
// returned once and stored as an HMAC.
func (s *Service) CreateSCIMToken(ctx context.Context, cu *Customer) (string, string, error) {
	if !cu.Admin {
		return "", "", coded(KindForbidden, "forbidden", "only tenant admins may create SCIM tokens")
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	tok := "actas_scim_" + randomToken(32)
	t := storage.SCIMToken{ID: "scim_" + randomToken(9), TenantID: cu.Tenant, Issuer: cu.Iss, Hash: s.secrets.SCIMHash(tok),
		CreatedBy: cu.Sub, CreatedAt: s.now()}
	ev := s.event(cu.Actor(), cu.Tenant, audit.SCIMTokenCreate, t.ID, audit.Success, nil)
	if err := s.store.CreateSCIMToken(ctx, t, ev); err != nil {
		return "", "", unavailable(err)
	}
	return t.ID, tok, nil
}

// RevokeSCIMToken deletes a tenant's SCIM bearer; admins only.
func (s *Service) RevokeSCIMToken(ctx context.Context, cu *Customer, id string) error {
	if !cu.Admin {
		return coded(KindForbidden, "forbidden", "only tenant admins may revoke SCIM tokens")
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ev := s.event(cu.Actor(), cu.Tenant, audit.SCIMTokenRevoke, id, audit.Success, nil)
	switch err := s.store.RevokeSCIMToken(ctx, cu.Tenant, id, ev); {
	case errors.Is(err, storage.ErrNotFound):
		return coded(KindNotFound, "not_found", "no such SCIM token")
	case err != nil:
		return unavailable(err)
	}
	return nil
}

// Directory is an authenticated SCIM client: one tenant's directory.
type Directory struct {
	Token   storage.SCIMToken
	subject string // externalId or userName
}

var errSCIMAuth = coded(KindUnauthenticated, "unauthorized", "a valid SCIM bearer token of this tenant is required")

// AuthenticateDirectory checks a SCIM bearer for tenant.
func (s *Service) AuthenticateDirectory(ctx context.Context, bearer, tenant string) (*Directory, error) {
	if !strings.HasPrefix(bearer, "actas_scim_") || len(bearer) > 128 {
		return nil, errSCIMAuth
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	t, err := s.store.SCIMTokenByHash(ctx, s.secrets.SCIMHash(bearer))
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil, errSCIMAuth
	case err != nil:
		return nil, unavailable(err)
	case t.TenantID != tenant:
		return nil, errSCIMAuth
	}
	d := &Directory{Token: t, subject: "externalId"}
	if ci := s.customers[t.Issuer]; ci != nil && ci.SCIMSubject != "" {
		d.subject = ci.SCIMSubject
	}
	return d, nil
}

var directoryActor = audit.Actor{Type: storage.ActorSystem, ID: "directory"}

// PutUser creates (create) or replaces a directory user, and applies what
// the new state means for their grants and admin address, in one
// transaction.
func (s *Service) PutUser(ctx context.Context, d *Directory, u storage.DirectoryUser, create bool) (storage.DirectoryUser, error) {
	if u.UserName == "" {
		return u, fail(KindInvalid, "userName is required")
	}
	u.TenantID, u.Issuer = d.Token.TenantID, d.Token.Issuer
	u.Subject = u.ExternalID
	if d.subject == "userName" {
		u.Subject = u.UserName
	}
	now := s.now()
	u.UpdatedAt = now
	if create {
		u.ID, u.CreatedAt = randomToken(12), now
	}
	ch := s.roleChange(u.TenantID, u.Subject, u.Issuer, u.Role, u.Active, u.Emails, "directory")
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ev := s.event(directoryActor, u.TenantID, audit.DirectoryUserPut, u.ID, audit.Success,
		map[string]any{"user_name": u.UserName, "active": u.Active, "role": u.Role, "sub": u.Subject})
	switch err := s.store.PutDirectoryUser(ctx, u, create, ch, ev); {
	case errors.Is(err, storage.ErrAlreadyExists):
		return u, coded(KindConflict, "uniqueness", "userName is already taken in this tenant")
	case errors.Is(err, storage.ErrNotFound):
		return u, coded(KindNotFound, "not_found", "no such user")
	case err != nil:
		return u, unavailable(err)
	}
	return u, nil
}

// User returns one directory user.
func (s *Service) User(ctx context.Context, d *Directory, id string) (storage.DirectoryUser, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	u, err := s.store.DirectoryUser(ctx, d.Token.TenantID, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return u, coded(KindNotFound, "not_found", "no such user")
	case err != nil:
		return u, unavailable(err)
	}
	return u, nil
}

// Users lists directory users, optionally one userName.
func (s *Service) Users(ctx context.Context, d *Directory, userName string, start, count int) ([]storage.DirectoryUser, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	l, total, err := s.store.DirectoryUsers(ctx, d.Token.TenantID, userName, start, count)
	if err != nil {
		return nil, 0, unavailable(err)
	}
	return l, total, nil
}

// DeleteUser removes a directory user: their grants end at once.
func (s *Service) DeleteUser(ctx context.Context, d *Directory, id string) error {
	u, err := s.User(ctx, d, id)
	if err != nil {
		return err
	}
	ch := s.roleChange(u.TenantID, u.Subject, u.Issuer, "", false, nil, "directory")
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ev := s.event(directoryActor, u.TenantID, audit.DirectoryUserDelete, u.ID, audit.Success, map[string]any{"user_name": u.UserName, "sub": u.Subject})
	switch err := s.store.DeleteDirectoryUser(ctx, u.TenantID, u.ID, ch, ev); {
	case errors.Is(err, storage.ErrNotFound):
		return coded(KindNotFound, "not_found", "no such user")
	case err != nil:
		return unavailable(err)
	}
	return nil
}

// roleChange decides what a user's state does to their grants: inactive
// (or deleted) ends them all; a role caps (or, with on_granter_demotion:
// end, ends) the grants above it; only an active admin has an admin
// address.
func (s *Service) roleChange(tenant, sub, iss, role string, active bool, emails []string, source string) storage.RoleChange {
	pol := s.policy.Load()
	ch := storage.RoleChange{TenantID: tenant, Sub: sub, Iss: iss, Role: role, Now: s.now()}
	by := audit.Actor{Type: storage.ActorSystem, ID: source}
	switch {
	case !active:
		ch.EndAll, ch.Role, ch.Reason = true, storage.RoleInactive, source+": user deactivated or removed"
		ch.GrantEvent = s.event(by, tenant, audit.GrantRevoke, "", audit.Success, map[string]any{"reason": ch.Reason})
		return ch
	case role == "":
		return ch // the directory does not manage roles: tokens say them
	case !pol.KnowsRole(role):
		ch.EndAll, ch.Reason = true, source+": role "+role+" is not a role of the policy"
		ch.GrantEvent = s.event(by, tenant, audit.GrantRevoke, "", audit.Success, map[string]any{"reason": ch.Reason})
		return ch
	}
	ch.Above, ch.EndAbove = pol.RolesAbove(role), pol.EndOnDemotion
	ch.Reason = source + ": role is now " + role
	if ch.EndAbove {
		ch.GrantEvent = s.event(by, tenant, audit.GrantRevoke, "", audit.Success, map[string]any{"reason": ch.Reason})
	} else {
		ch.GrantEvent = s.event(by, tenant, audit.GrantCap, "", audit.Success, map[string]any{"reason": ch.Reason})
	}
	if pol.IsGranter(role) && len(emails) > 0 {
		ch.AdminEmail = emails[0]
	}
	return ch
}

// noteRole applies a fresh token's role: a role below the last one known
// for the user is a demotion, with the same effect as the directory's.
func (s *Service) noteRole(ctx context.Context, cu *Customer) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	known, err := s.store.KnownRole(ctx, cu.Tenant, cu.Sub, cu.Iss)
	if err != nil {
		return unavailable(err)
	}
	if known == cu.Role {
		return nil
	}
	if known == storage.RoleInactive {
		// The directory deactivated or removed this user: a token their
		// IdP issued before does not act for the tenant any more.
		return coded(KindUnauthenticated, "unauthorized", "your account is deactivated in your organisation's directory")
	}
	pol := s.policy.Load()
	var emails []string
	if cu.Email != "" {
		emails = []string{cu.Email}
	}
	ch := s.roleChange(cu.Tenant, cu.Sub, cu.Iss, cu.Role, true, emails, "token")
	demoted := known != "" && (!pol.KnowsRole(cu.Role) || pol.RoleAtMost(cu.Role, known))
	if !demoted {
		// First sight or a promotion: record it; nothing live changes.
		ch.Above, ch.EndAll = nil, false
	} else {
		s.appendAudit(ctx, s.event(cu.Actor(), cu.Tenant, audit.CustomerDemoted, cu.Sub, audit.Success,
			map[string]any{"from": known, "to": cu.Role}))
	}
	if err := s.store.ApplyRole(ctx, ch); err != nil {
		return unavailable(err)
	}
	return nil
}
