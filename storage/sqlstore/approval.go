package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

const awaiting = `approvals_needed > 0 AND approved_at IS NULL AND revoked_at IS NULL`

// ApproveGrant records one approval and approves the grant when enough
// distinct approvers are in.
func (s *Store) ApproveGrant(ctx context.Context, tenantID, id, approver string, now, codeExpires time.Time, ev storage.AuditEvent) (bool, error) {
	var done bool
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		done = false
		var needed int
		err := s.queryRow(ctx, tx, `SELECT approvals_needed FROM grants WHERE tenant_id = ? AND id = ? AND `+awaiting+`
			AND approval_deadline > ? AND expires_at > ?`, tenantID, id, micro(now), micro(now)).Scan(&needed)
		if errors.Is(err, sql.ErrNoRows) {
			var n int
			if err := s.queryRow(ctx, tx, `SELECT COUNT(*) FROM grants WHERE tenant_id = ? AND id = ?`, tenantID, id).Scan(&n); err != nil {
				return s.mapErr(err)
			}
			if n == 0 {
				return storage.ErrNotFound
			}
			return storage.ErrConflict
		}
		if err != nil {
			return s.mapErr(err)
		}
		added, err := s.exec(ctx, tx, `INSERT INTO grant_approvals (grant_id, approver, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			id, approver, micro(now))
		if err != nil {
			return err
		}
		if added == 0 {
			return nil // this admin approved before: nothing changes
		}
		var have int
		if err := s.queryRow(ctx, tx, `SELECT COUNT(*) FROM grant_approvals WHERE grant_id = ?`, id).Scan(&have); err != nil {
			return s.mapErr(err)
		}
		if have >= needed {
			if _, err := s.exec(ctx, tx, `UPDATE grants SET approved_at = ?, code_expires_at = ? WHERE id = ?`,
				micro(now), micro(codeExpires), id); err != nil {
				return err
			}
			done = true
		}
		if !done {
			ev.Notify = "" // the granter hears the decision, not each vote
		}
		return s.insertAudit(ctx, tx, ev)
	})
	return done, err
}

// IssueApprovedCode sets the code of an approved grant, once.
func (s *Store) IssueApprovedCode(ctx context.Context, tenantID, id string, codeHash []byte, now time.Time, ev storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `UPDATE grants SET code_hash = ?, code_issued = TRUE
			WHERE tenant_id = ? AND id = ? AND approved_at IS NOT NULL AND code_issued = FALSE AND redeemed_at IS NULL
			AND revoked_at IS NULL AND code_expires_at > ? AND expires_at > ?`, codeHash, tenantID, id, micro(now), micro(now))
		if err != nil {
			return err
		}
		if n == 0 {
			return storage.ErrConflict
		}
		return s.insertAudit(ctx, tx, ev)
	})
}

// EndAwaiting ends a grant that still awaits approval.
func (s *Store) EndAwaiting(ctx context.Context, tenantID, id, by, reason string, now time.Time, ev storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		ids, err := s.endGrants(ctx, tx, tenantID, `id = ? AND `+awaiting, []any{id}, now, by, reason, &ev)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return storage.ErrConflict
		}
		return nil
	})
}

// ExpireApprovals ends grants whose approval deadline passed.
func (s *Store) ExpireApprovals(ctx context.Context, now time.Time, limit int, ev storage.AuditEvent) (int, error) {
	var n int
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		n = 0
		var due []struct {
			ID     string `db:"id"`
			Tenant string `db:"tenant_id"`
		}
		if err := tx.SelectContext(ctx, &due, tx.Rebind(`SELECT id, tenant_id FROM grants WHERE `+awaiting+` AND approval_deadline <= ?
			ORDER BY approval_deadline LIMIT ?`), micro(now), limit); err != nil {
			return s.mapErr(err)
		}
		for _, g := range due {
			ids, err := s.endGrants(ctx, tx, g.Tenant, `id = ?`, []any{g.ID}, now, "system", "approval_timeout", &ev)
			if err != nil {
				return err
			}
			n += len(ids)
		}
		return nil
	})
	return n, err
}
