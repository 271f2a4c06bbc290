package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

// insertAudit appends ev to its tenant's hash chain inside tx: the head
// row is locked (PostgreSQL FOR UPDATE; SQLite has one writer), the event
// is linked to it and the head advanced, all in the caller's transaction.
func (s *Store) insertAudit(ctx context.Context, tx *sqlx.Tx, ev storage.AuditEvent) error {
	if ev.Action == "" || ev.ActorType == "" {
		return fmt.Errorf("sqlstore: audit event needs an action and an actor type")
	}
	// One statement creates the head if needed and returns it; the no-op
	// update takes the row lock on PostgreSQL until the transaction ends.
	var prev []byte
	if err := s.queryRow(ctx, tx, `INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?, 0, ?)
		ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_heads.seq RETURNING seq, hash`,
		ev.TenantID, storage.GenesisHash).Scan(&ev.Seq, &prev); err != nil {
		return s.mapErr(err)
	}
	ev.Seq++
	ev.Time = time.UnixMicro(ev.Time.UnixMicro()).UTC() // the precision stored, so the hash verifies
	if len(ev.Detail) == 0 {
		ev.Detail = []byte("{}")
	}
	hash := storage.EventHash(s.auditKey, &ev, prev)
	var id int64
	if err := s.queryRow(ctx, tx, `INSERT INTO audit_events
		(tenant_id, at, actor_type, actor_id, actor_iss, action, target, outcome, detail, policy_sha256, seq, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		ev.TenantID, micro(ev.Time), ev.ActorType, ev.ActorID, ev.ActorIss, ev.Action, ev.Target,
		ev.Outcome, string(ev.Detail), ev.PolicySHA256, ev.Seq, prev, hash).Scan(&id); err != nil {
		return s.mapErr(err)
	}
	if _, err := s.exec(ctx, tx, `UPDATE audit_heads SET seq = ?, hash = ? WHERE tenant_id = ?`, ev.Seq, hash, ev.TenantID); err != nil {
		return err
	}
	return s.enqueue(ctx, tx, &ev, id)
}

// AppendAudit writes events in one transaction of their own.
func (s *Store) AppendAudit(ctx context.Context, evs ...storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		for _, ev := range evs {
			if err := s.insertAudit(ctx, tx, ev); err != nil {
				return err
			}
		}
		return nil
	})
}

// AuditHeads returns every tenant's chain head.
func (s *Store) AuditHeads(ctx context.Context) ([]storage.AuditHead, error) {
	rows, err := s.read.QueryxContext(ctx, `SELECT tenant_id, seq, hash FROM audit_heads ORDER BY tenant_id`)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	var out []storage.AuditHead
	for rows.Next() {
		var h storage.AuditHead
		if err := rows.Scan(&h.TenantID, &h.Seq, &h.Hash); err != nil {
			return nil, s.mapErr(err)
		}
		out = append(out, h)
	}
	return out, s.mapErr(rows.Err())
}

// AuditChain returns a tenant's events after afterSeq in chain order.
func (s *Store) AuditChain(ctx context.Context, tenantID string, afterSeq int64, limit int) ([]storage.AuditEvent, error) {
	// seq > ? (not COALESCE(seq, 0) > ?) so that the (tenant_id, seq)
	// index serves each page: paging a long chain stays linear.
	return s.queryAudit(ctx, fmt.Sprintf(`SELECT `+auditCols+` FROM audit_events WHERE tenant_id = ? AND seq > ?
		ORDER BY seq LIMIT %d`, limit), tenantID, afterSeq)
}

// Audit lists events, newest first.
func (s *Store) Audit(ctx context.Context, f storage.AuditFilter) ([]storage.AuditEvent, error) {
	q := `SELECT ` + auditCols + ` FROM audit_events WHERE tenant_id = ?`
	args := []any{f.TenantID}
	if f.ActorType != "" {
		q += ` AND actor_type = ?`
		args = append(args, f.ActorType)
	}
	if f.Action != "" {
		q += ` AND action = ?`
		args = append(args, f.Action)
	}
	if !f.Since.IsZero() {
		q += ` AND at >= ?`
		args = append(args, micro(f.Since))
	}
	if !f.Until.IsZero() {
		q += ` AND at < ?`
		args = append(args, micro(f.Until))
	}
	if f.BeforeID > 0 {
		q += ` AND id < ?`
		args = append(args, f.BeforeID)
	}
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	q += fmt.Sprintf(` ORDER BY id DESC LIMIT %d`, limit)
	return s.queryAudit(ctx, q, args...)
}

const auditCols = `id, tenant_id, at, actor_type, actor_id, actor_iss, action, target, outcome, detail, policy_sha256,
	COALESCE(seq, 0), prev_hash, hash`

func (s *Store) queryAudit(ctx context.Context, q string, args ...any) ([]storage.AuditEvent, error) {
	rows, err := s.read.QueryxContext(ctx, s.read.Rebind(q), args...)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	var out []storage.AuditEvent
	for rows.Next() {
		var e storage.AuditEvent
		var at int64
		var detail string
		if err := rows.Scan(&e.ID, &e.TenantID, &at, &e.ActorType, &e.ActorID, &e.ActorIss, &e.Action, &e.Target, &e.Outcome,
			&detail, &e.PolicySHA256, &e.Seq, &e.PrevHash, &e.Hash); err != nil {
			return nil, s.mapErr(err)
		}
		e.Time, e.Detail = fromMicro(at), []byte(detail)
		out = append(out, e)
	}
	return out, s.mapErr(rows.Err())
}
