package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

// Tenant returns a tenant's setting.
func (s *Store) Tenant(ctx context.Context, id string) (storage.Tenant, error) {
	var t storage.Tenant
	var at int64
	err := s.read.QueryRowxContext(ctx, s.read.Rebind(`SELECT id, support_enabled, allow_non_admin_grants, changed_by, changed_at, issuer
		FROM tenants WHERE id = ?`), id).Scan(&t.ID, &t.SupportEnabled, &t.AllowNonAdminGrants, &t.ChangedBy, &at, &t.Issuer)
	if err != nil {
		return storage.Tenant{}, s.mapErr(err)
	}
	t.ChangedAt = fromMicro(at)
	return t, nil
}

// SetSupportAccess upserts the tenant and, when turning support off, ends
// every live grant of the tenant with its tokens.
func (s *Store) SetSupportAccess(ctx context.Context, t storage.Tenant, ev, grantEnded storage.AuditEvent) (int, error) {
	var ended int64
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		ended = 0
		n, err := s.exec(ctx, tx, `INSERT INTO tenants (id, support_enabled, allow_non_admin_grants, changed_by, changed_at, issuer)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET support_enabled = excluded.support_enabled,
				allow_non_admin_grants = excluded.allow_non_admin_grants,
				changed_by = excluded.changed_by, changed_at = excluded.changed_at,
				issuer = CASE WHEN tenants.issuer = '' THEN excluded.issuer ELSE tenants.issuer END
			WHERE tenants.issuer = '' OR tenants.issuer = excluded.issuer`,
			t.ID, t.SupportEnabled, t.AllowNonAdminGrants, t.ChangedBy, micro(t.ChangedAt), t.Issuer)
		if err != nil {
			return err
		}
		if n == 0 {
			return storage.ErrConflict // bound to another issuer
		}
		if err := s.insertAudit(ctx, tx, ev); err != nil {
			return err
		}
		// The toggle and "allow non-admins" are part of every token's state.
		if err := s.bumpState(ctx, tx); err != nil {
			return err
		}
		if !t.SupportEnabled {
			ids, err := s.endGrants(ctx, tx, t.ID, `expires_at > ?`, []any{micro(t.ChangedAt)},
				t.ChangedAt, t.ChangedBy, "support_access_disabled", &grantEnded)
			if err != nil {
				return err
			}
			ended = int64(len(ids))
			// Codes of grants that ran out are voided too, and no token of
			// the tenant outlives the toggle.
			if _, err := s.exec(ctx, tx, `UPDATE grants SET code_hash = NULL WHERE tenant_id = ? AND code_hash IS NOT NULL`, t.ID); err != nil {
				return err
			}
			for _, table := range []string{"tokens", "refresh_tokens"} {
				if _, err := s.exec(ctx, tx, `UPDATE `+table+` SET revoked_at = ?
					WHERE revoked_at IS NULL AND grant_id IN (SELECT id FROM grants WHERE tenant_id = ?)`, micro(t.ChangedAt), t.ID); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return int(ended), err
}

// endGrants is the one end of grants, whatever the cause (terminate,
// refresh-token revocation or reuse, toggle off, ticket closed, lockout):
// every unrevoked grant of tenant that also matches cond (SQL on grants,
// with args) ends at at, by by, for reason; its tokens and refresh tokens
// end with it; and unless ev is nil one event per ended grant (ev with the
// grant as target and its sub and act added) is written in the same
// transaction, with the notifications it triggers. It returns the ended
// grants' IDs. Whatever a grant's end must also do (logout tokens, push
// events) belongs here.
func (s *Store) endGrants(ctx context.Context, tx *sqlx.Tx, tenant, cond string, args []any, at time.Time, by, reason string, ev *storage.AuditEvent) ([]string, error) {
	q := tx.Rebind(`UPDATE grants SET revoked_at = ?, revoked_by = ?, revoke_reason = ?, code_hash = NULL
		WHERE tenant_id = ? AND revoked_at IS NULL AND (` + cond + `) RETURNING id, tenant_id, granted_by, granted_by_iss, engineer_sub, engineer_iss`)
	var ended []endedGrant
	if err := tx.SelectContext(ctx, &ended, q, append([]any{micro(at), by, reason, tenant}, args...)...); err != nil {
		return nil, s.mapErr(err)
	}
	sort.Slice(ended, func(i, j int) bool { return ended[i].ID < ended[j].ID })
	if len(ended) > 0 {
		if err := s.bumpState(ctx, tx); err != nil {
			return nil, err
		}
	}
	ids := make([]string, 0, len(ended))
	for _, g := range ended {
		for _, table := range []string{"tokens", "refresh_tokens"} {
			if _, err := s.exec(ctx, tx, `UPDATE `+table+` SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL`, micro(at), g.ID); err != nil {
				return nil, err
			}
		}
		if ev != nil {
			e := *ev
			e.TenantID, e.Target = tenant, g.ID
			e.Detail = mergeDetail(e.Detail, map[string]any{"sub": g.Sub, "act": g.Act})
			if err := s.insertAudit(ctx, tx, e); err != nil {
				return nil, err
			}
		}
		ids = append(ids, g.ID)
	}
	if err := s.signalEnds(ctx, tx, ended, at, reason, initiator(ev, reason)); err != nil {
		return nil, err
	}
	if err := s.logoutEnds(ctx, tx, ended, at, reason); err != nil {
		return nil, err
	}
	return ids, nil
}

// initiator is CAEP's initiating_entity of a grant's end.
func initiator(ev *storage.AuditEvent, reason string) string {
	switch {
	case strings.Contains(reason, "policy"):
		return "policy"
	case ev == nil || ev.ActorType == storage.ActorSystem || ev.ActorType == storage.ActorClient:
		return "system"
	case ev.ActorType == storage.ActorTenantAdmin:
		return "admin"
	}
	return "user"
}

// CreateGrant stores a grant if the tenant's support access is on. Grants
// are group-committed with redemptions (inBatch): a tenant's concurrent
// grants then share one transaction and one lock of the audit chain head,
// instead of queueing for it one transaction at a time.
func (s *Store) CreateGrant(ctx context.Context, g storage.Grant, ev storage.AuditEvent) error {
	_, err := s.inBatch(ctx, g.TenantID, s.undoneOnError(func(ctx context.Context, tx *sqlx.Tx) error {
		return s.createGrantInTx(ctx, tx, g, ev)
	}))
	return err
}

func (s *Store) createGrantInTx(ctx context.Context, tx *sqlx.Tx, g storage.Grant, ev storage.AuditEvent) error {
	var enabled bool
	err := s.queryRow(ctx, tx, `SELECT support_enabled FROM tenants WHERE id = ?`+s.f.forShare, g.TenantID).Scan(&enabled)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !enabled) {
		return storage.ErrSupportOff
	}
	if err != nil {
		return s.mapErr(err)
	}
	claims := string(g.GranterClaims)
	if claims == "" {
		claims = "{}"
	}
	if _, err := s.exec(ctx, tx, `INSERT INTO grants (id, tenant_id, role, environments, resources, ticket, ticket_system, ticket_severity,
		granted_by, granted_by_iss, granter_role, granter_claims, created_at, expires_at, code_hash, code_expires_at,
		approval_rule, approvals_needed, approval_deadline)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		g.ID, g.TenantID, g.Role, jsonList(g.Environments), jsonList(g.Resources), g.Ticket, g.TicketSystem, g.TicketSeverity,
		g.GrantedBy, g.GrantedByIss, g.GranterRole, claims, micro(g.CreatedAt), micro(g.ExpiresAt),
		g.CodeHash, micro(g.CodeExpiresAt), g.ApprovalRule, g.ApprovalsNeeded, nullMicro(g.ApprovalDeadline)); err != nil {
		return err
	}
	return s.insertAudit(ctx, tx, ev)
}

const grantCols = `g.id, g.tenant_id, g.role, g.environments, g.resources, g.ticket, g.granted_by, g.granted_by_iss,
	g.granter_role, g.granter_claims, g.created_at, g.expires_at, g.code_hash, g.code_expires_at, g.redeemed_at,
	g.engineer_sub, g.engineer_iss, g.engineer_email, g.revoked_at, g.revoked_by, g.revoke_reason,
	g.engineer_groups, g.engineer_mfa, g.engineer_claims, g.ticket_system, g.ticket_severity,
	g.approval_rule, g.approvals_needed, g.approval_deadline, g.approved_at`

type scanner interface{ Scan(dest ...any) error }

// grantDest returns scan destinations for grantCols and a finish function
// that converts them into g.
func grantDest(g *storage.Grant) ([]any, func() error) {
	var envs, res, claims, engGroups, engClaims string
	var created, expires, codeExp int64
	var redeemed, revoked, deadline, approved sql.NullInt64
	dest := []any{&g.ID, &g.TenantID, &g.Role, &envs, &res, &g.Ticket, &g.GrantedBy, &g.GrantedByIss,
		&g.GranterRole, &claims, &created, &expires, &g.CodeHash, &codeExp, &redeemed,
		&g.EngineerSub, &g.EngineerIss, &g.EngineerEmail, &revoked, &g.RevokedBy, &g.RevokeReason,
		&engGroups, &g.EngineerMFA, &engClaims, &g.TicketSystem, &g.TicketSeverity,
		&g.ApprovalRule, &g.ApprovalsNeeded, &deadline, &approved}
	return dest, func() error {
		var err error
		if g.EngineerGroups, err = parseList(engGroups); err != nil {
			return err
		}
		g.EngineerClaims = []byte(engClaims)
		if g.Environments, err = parseList(envs); err != nil {
			return err
		}
		if g.Resources, err = parseList(res); err != nil {
			return err
		}
		g.GranterClaims = []byte(claims)
		g.CreatedAt, g.ExpiresAt, g.CodeExpiresAt = fromMicro(created), fromMicro(expires), fromMicro(codeExp)
		g.RedeemedAt, g.RevokedAt = fromNull(redeemed), fromNull(revoked)
		g.ApprovalDeadline, g.ApprovedAt = fromNull(deadline), fromNull(approved)
		return nil
	}
}

func (s *Store) scanGrant(row scanner) (storage.Grant, error) {
	var g storage.Grant
	dest, finish := grantDest(&g)
	if err := row.Scan(dest...); err != nil {
		return storage.Grant{}, s.mapErr(err)
	}
	return g, finish()
}

// Grant returns one grant of a tenant.
func (s *Store) Grant(ctx context.Context, tenantID, id string) (storage.Grant, error) {
	return s.scanGrant(s.read.QueryRowxContext(ctx, s.read.Rebind(`SELECT `+grantCols+` FROM grants g WHERE g.tenant_id = ? AND g.id = ?`), tenantID, id))
}

// Grants lists grants, newest first.
func (s *Store) Grants(ctx context.Context, f storage.GrantFilter) ([]storage.Grant, error) {
	q := `SELECT ` + grantCols + ` FROM grants g WHERE g.tenant_id = ?`
	args := []any{f.TenantID}
	if f.GrantedBy != "" {
		q += ` AND g.granted_by = ?`
		args = append(args, f.GrantedBy)
	}
	now := micro(f.Now)
	const live = `(g.revoked_at IS NULL AND g.expires_at > ? AND (g.redeemed_at IS NOT NULL OR g.code_expires_at > ?))`
	switch f.Status {
	case "active":
		q += ` AND ` + live
		args = append(args, now, now)
	case "inactive":
		q += ` AND NOT ` + live
		args = append(args, now, now)
	case "all", "":
	default:
		return nil, fmt.Errorf("sqlstore: unknown status filter %q", f.Status)
	}
	if p := f.After; p != nil {
		q += ` AND (g.created_at < ? OR (g.created_at = ? AND g.id < ?))`
		args = append(args, micro(p.CreatedAt), micro(p.CreatedAt), p.ID)
	}
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	q += fmt.Sprintf(` ORDER BY g.created_at DESC, g.id DESC LIMIT %d`, limit)
	return s.queryGrants(ctx, q, args...)
}

// queryGrants runs a query selecting grantCols on the readers.
func (s *Store) queryGrants(ctx context.Context, q string, args ...any) ([]storage.Grant, error) {
	rows, err := s.read.QueryxContext(ctx, s.read.Rebind(q), args...)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	var out []storage.Grant
	for rows.Next() {
		g, err := s.scanGrant(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, s.mapErr(rows.Err())
}

// RevokeGrant ends a grant, its tokens and refresh tokens, through
// endGrants; ev is the event of the end (false and no event if the grant
// had already ended by revocation).
func (s *Store) RevokeGrant(ctx context.Context, tenantID, id string, at time.Time, by, reason string, ev storage.AuditEvent) (bool, error) {
	var changed bool
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		ids, err := s.endGrants(ctx, tx, tenantID, `id = ?`, []any{id}, at, by, reason, &ev)
		if err != nil {
			return err
		}
		changed = len(ids) == 1
		if !changed {
			var one int
			if err := tx.GetContext(ctx, &one, tx.Rebind(`SELECT 1 FROM grants WHERE tenant_id = ? AND id = ?`), tenantID, id); err != nil {
				return s.mapErr(err)
			}
		}
		return nil
	})
	return changed, err
}

// TicketUpdate applies a ticket status change; see storage.Store.
func (s *Store) TicketUpdate(ctx context.Context, u storage.TicketUpdate) ([]string, error) {
	var ended []string
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		ended = nil
		if _, err := s.exec(ctx, tx, `DELETE FROM hook_replays WHERE expires_at < ?`, micro(u.Now)); err != nil {
			return err
		}
		if _, err := s.exec(ctx, tx, `INSERT INTO hook_replays (signature, expires_at) VALUES (?, ?)`, u.ReplayKey, micro(u.ReplayUntil)); err != nil {
			return err
		}
		if u.End {
			cond, args := `ticket = ? AND expires_at > ?`, []any{u.TicketID, micro(u.Now)}
			if u.System != "" {
				cond += ` AND ticket_system = ?`
				args = append(args, u.System)
			}
			var err error
			if ended, err = s.endGrants(ctx, tx, u.TenantID, cond, args, u.Now, "system", u.Reason, &u.GrantEvent); err != nil {
				return err
			}
		}
		ev := u.Event
		ev.Detail = mergeDetail(ev.Detail, map[string]any{"ended_grants": nonNilList(ended)})
		return s.insertAudit(ctx, tx, ev)
	})
	return ended, err
}

func nonNilList(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
