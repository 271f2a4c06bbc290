package core

import (
	"context"
	"errors"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

// Two-person approval (policy approval:): a matching grant waits for other
// tenant admins; its code exists only once they approved, and the granter
// fetches it once.

var (
	errNotAwaiting = coded(KindConflict, "not_awaiting_approval", "this grant does not await approval")
	errSelfApprove = coded(KindConflict, "own_grant", "the granter cannot approve or refuse their own grant; another admin must")
)

// awaitingGrant reads a grant another admin decides on.
func (s *Service) awaitingGrant(ctx context.Context, cu *Customer, id string) (storage.Grant, error) {
	if !cu.Admin {
		return storage.Grant{}, coded(KindForbidden, "forbidden", "only tenant admins may approve or refuse grants")
	}
	g, err := s.Grant(ctx, cu, id)
	if err != nil {
		return g, err
	}
	if g.GrantedBy == cu.Sub && g.GrantedByIss == cu.Iss {
		return g, errSelfApprove
	}
	return g, nil
}

// ApproveGrant records cu's approval; with enough approvals the grant's
// code may be fetched by its granter.
func (s *Service) ApproveGrant(ctx context.Context, cu *Customer, id string) (storage.Grant, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	g, err := s.awaitingGrant(ctx, cu, id)
	if err != nil {
		return g, err
	}
	now := s.now()
	codeExpires := earliest(now.Add(s.policy.Load().Code.RedeemWithin), g.ExpiresAt)
	ev := s.event(cu.Actor(), cu.Tenant, audit.GrantApprove, g.ID, audit.Success,
		map[string]any{"rule": g.ApprovalRule, "approvers": g.ApprovalsNeeded, "sub": g.GrantedBy})
	ev.Notify = storage.NotifyApprovalDecided
	_, err = s.store.ApproveGrant(ctx, g.TenantID, g.ID, cu.Sub, now, codeExpires, ev)
	switch {
	case errors.Is(err, storage.ErrConflict):
		return g, errNotAwaiting
	case err != nil:
		return g, unavailable(err)
	}
	return s.Grant(ctx, cu, id)
}

// DenyGrant refuses a grant awaiting approval: it ends.
func (s *Service) DenyGrant(ctx context.Context, cu *Customer, id string) (storage.Grant, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	g, err := s.awaitingGrant(ctx, cu, id)
	if err != nil {
		return g, err
	}
	ev := s.event(cu.Actor(), cu.Tenant, audit.GrantRevoke, g.ID, audit.Success, map[string]any{"reason": "approval_denied"})
	ev.Notify = storage.NotifyApprovalDecided
	switch err := s.store.EndAwaiting(ctx, g.TenantID, g.ID, cu.Sub, "approval_denied", s.now(), ev); {
	case errors.Is(err, storage.ErrConflict):
		return g, errNotAwaiting
	case err != nil:
		return g, unavailable(err)
	}
	return s.Grant(ctx, cu, id)
}

// FetchCode gives the granter the support code of their approved grant,
// once.
func (s *Service) FetchCode(ctx context.Context, cu *Customer, id string) (string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	g, err := s.Grant(ctx, cu, id)
	if err != nil {
		return "", err
	}
	if g.GrantedBy != cu.Sub || g.GrantedByIss != cu.Iss {
		return "", coded(KindForbidden, "forbidden", "only the granter fetches the code of their grant")
	}
	if g.ApprovalsNeeded == 0 || g.ApprovedAt.IsZero() {
		return "", coded(KindConflict, "not_approved", "the grant has no code to fetch: it was shown at creation, or it awaits approval")
	}
	pol := s.policy.Load()
	ev := s.event(cu.Actor(), cu.Tenant, audit.GrantCodeIssue, g.ID, audit.Success, nil)
	for attempt := 0; ; attempt++ {
		code := newCode(pol.Code.Length)
		err := s.store.IssueApprovedCode(ctx, g.TenantID, g.ID, s.secrets.CodeHash(g.TenantID, code), s.now(), ev)
		switch {
		case err == nil:
			return code, nil
		case errors.Is(err, storage.ErrAlreadyExists) && attempt < 8:
			continue
		case errors.Is(err, storage.ErrConflict):
			return "", coded(KindConflict, "code_fetched", "the code was fetched already (it is shown once), or the grant ended")
		}
		return "", unavailable(err)
	}
}

// ExpireApprovals ends grants whose approval did not come in time.
func (s *Service) ExpireApprovals(ctx context.Context) {
	ev := s.event(audit.System, "", audit.GrantRevoke, "", audit.Success, map[string]any{"reason": "approval_timeout"})
	ev.Notify = storage.NotifyApprovalDecided
	for {
		n, err := s.store.ExpireApprovals(ctx, s.now(), 100, ev)
		if err != nil {
			if ctx.Err() == nil {
				s.log.WarnContext(ctx, "ending unapproved grants", "err", err)
			}
			return
		}
		if n < 100 {
			return
		}
	}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
