package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

// insertAudit appends ev to its tenant's hash chain inside tx; see
// insertAudits.
func (s *Store) insertAudit(ctx context.Context, tx *sqlx.Tx, ev storage.AuditEvent) error {
	return s.insertAudits(ctx, tx, []storage.AuditEvent{ev})
}

// insertAudits appends evs, in order, to their tenants' hash chains inside
// tx, in one statement. The first event of a tenant in tx reads the head
// and locks its row (PostgreSQL: the upsert's row lock; SQLite has one
// writer); later ones link to the head tx holds, and tx writes the head
// once before commit (flushHeads).
func (s *Store) insertAudits(ctx context.Context, tx *sqlx.Tx, evs []storage.AuditEvent) error {
	return s.insertAuditsWith(ctx, tx, evs, nil)
}

// insertAuditsWith is insertAudits, with the statement carrying with's
// inserts as data-modifying CTEs (PostgreSQL only: one round trip instead
// of several).
func (s *Store) insertAuditsWith(ctx context.Context, tx *sqlx.Tx, evs []storage.AuditEvent, with *cte) error {
	if len(evs) == 0 {
		return nil
	}
	st := s.state(tx)
	var tenants []string
	for _, ev := range evs {
		if ev.Action == "" || ev.ActorType == "" {
			return fmt.Errorf("sqlstore: audit event needs an action and an actor type")
		}
		tenants = append(tenants, ev.TenantID)
	}
	if err := s.readHeads(ctx, tx, st, tenants); err != nil {
		return err
	}
	var q string
	args := make([]any, 0, 13*len(evs))
	if with != nil {
		q = with.sql
		args = append(args, with.args...)
	}
	q += `INSERT INTO audit_events
		(tenant_id, at, actor_type, actor_id, actor_iss, action, target, outcome, detail, policy_sha256, seq, prev_hash, hash) VALUES ` +
		values(13, len(evs)) + ` RETURNING tenant_id, seq, id` // RETURNING's order is not promised: matched by tenant and seq
	heads := make(map[string]chainHead, len(tenants))
	for i := range evs {
		ev := &evs[i]
		h, ok := heads[ev.TenantID]
		if !ok {
			h = st.heads[ev.TenantID]
		}
		ev.Seq = h.seq + 1
		ev.Time = time.UnixMicro(ev.Time.UnixMicro()).UTC() // the precision stored, so the hash verifies
		if len(ev.Detail) == 0 {
			ev.Detail = []byte("{}")
		}
		hash := storage.EventHash(s.auditKey, ev, h.hash)
		args = append(args, ev.TenantID, micro(ev.Time), ev.ActorType, ev.ActorID, ev.ActorIss, ev.Action, ev.Target,
			ev.Outcome, string(ev.Detail), ev.PolicySHA256, ev.Seq, h.hash, hash)
		heads[ev.TenantID] = chainHead{seq: ev.Seq, hash: hash, dirty: true}
	}
	ids, err := s.returnedIDs(ctx, tx, q, args, len(evs))
	if err != nil {
		return err
	}
	maps.Copy(st.heads, heads)
	if err := s.readRecipients(ctx, tx, evs); err != nil {
		return err
	}
	for i := range evs {
		id, ok := ids[chainPos{evs[i].TenantID, evs[i].Seq}]
		if !ok {
			return fmt.Errorf("%w: audit event seq %d was not returned", storage.ErrUnavailable, evs[i].Seq)
		}
		if err := s.enqueue(ctx, tx, &evs[i], id); err != nil {
			return err
		}
	}
	return nil
}

// cte is a statement and its arguments: a WITH clause, whose arguments
// come before the statement's own, or a statement to ride in one.
type cte struct {
	sql  string
	args []any
}

// chainPos is an event's place: its tenant's chain and its seq there.
type chainPos struct {
	tenant string
	seq    int64
}

// readHeads reads the chain heads of tenants that tx has not read yet, in
// one statement that creates a missing head and, on PostgreSQL, locks
// each row until tx ends (the no-op update), in tenant order so that two
// transactions never wait for each other's.
func (s *Store) readHeads(ctx context.Context, tx *sqlx.Tx, st *txState, tenants []string) error {
	var need []string
	for _, t := range tenants {
		if _, ok := st.heads[t]; !ok && !slices.Contains(need, t) {
			need = append(need, t)
		}
	}
	if len(need) == 0 {
		return nil
	}
	slices.Sort(need)
	args := make([]any, 0, 3*len(need))
	for _, t := range need {
		args = append(args, t, 0, storage.GenesisHash)
	}
	rows, err := s.queryRows(ctx, tx, `INSERT INTO audit_heads (tenant_id, seq, hash) VALUES `+values(3, len(need))+`
		ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_heads.seq RETURNING tenant_id, seq, hash`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var t string
		var h chainHead
		if err := rows.Scan(&t, &h.seq, &h.hash); err != nil {
			return s.mapErr(err)
		}
		st.heads[t] = h
	}
	if err := rows.Err(); err != nil {
		return s.mapErr(err)
	}
	for _, t := range need {
		if _, ok := st.heads[t]; !ok {
			return fmt.Errorf("%w: audit head of %s was not returned", storage.ErrUnavailable, t)
		}
	}
	return nil
}

// returnedIDs runs an insert returning (tenant_id, seq, id) rows.
func (s *Store) returnedIDs(ctx context.Context, tx *sqlx.Tx, q string, args []any, n int) (map[chainPos]int64, error) {
	ids := make(map[chainPos]int64, n)
	rows, err := s.queryRows(ctx, tx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var p chainPos
		var id int64
		if err := rows.Scan(&p.tenant, &p.seq, &id); err != nil {
			return nil, s.mapErr(err)
		}
		ids[p] = id
	}
	return ids, s.mapErr(rows.Err())
}

// queryRows runs a prepared query in tx.
func (s *Store) queryRows(ctx context.Context, tx *sqlx.Tx, q string, args ...any) (*sql.Rows, error) {
	st, err := s.prepared(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	return rows, s.mapErr(err)
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
