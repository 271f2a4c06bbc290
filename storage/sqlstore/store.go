package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/actas/actas/storage"
)

// Store is storage.Store on SQLite or PostgreSQL.
type Store struct {
	f     flavor
	write *sqlx.DB // SQLite: one connection, BEGIN IMMEDIATE
	read  *sqlx.DB // SQLite: a pool of read-only connections; PostgreSQL: == write

	tokenState *sqlx.Stmt

	// SQLite only: the group-commit batcher of Redeem.
	batch     chan *redeemJob
	stop      chan struct{}
	batchDone chan struct{}
	closeOnce sync.Once

	stmtMu sync.Mutex
	stmts  map[string]*sqlx.Stmt // prepared on write, by query text
	wanted map[string]bool       // queries to prepare once the writer is free
	closed bool

	auditKey []byte // HMAC key of the audit chain
}

var _ storage.Store = (*Store)(nil)

// Options tune Open.
type Options struct {
	// Migrate applies pending migrations; otherwise a database behind the
	// binary's schema is an error.
	Migrate bool
	Now     func() time.Time
	// AuditKey keys the audit chain's HMAC; at least 32 bytes, required.
	AuditKey []byte
}

// Open connects to kind ("sqlite" or "postgres") at dsn (a file path, or a
// PostgreSQL URL).
func Open(ctx context.Context, kind, dsn string, o Options) (*Store, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(o.AuditKey) < 32 {
		return nil, errors.New("sqlstore: an audit chain key of at least 32 bytes is required")
	}
	s := &Store{auditKey: o.AuditKey}
	switch kind {
	case "sqlite":
		s.f = flavorSQLite
		// Create the file owner-only: it holds personal data and sealed
		// keys, and SQLite gives its WAL and shm files the same mode.
		f, err := os.OpenFile(dsn, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: %w", err)
		}
		f.Close()
		base := "file:" + (&url.URL{Path: dsn}).EscapedPath() +
			"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)"
		w, err := sqlx.Open("sqlite", base+"&_txlock=immediate")
		if err != nil {
			return nil, err
		}
		w.SetMaxOpenConns(1)
		w.SetMaxIdleConns(1)
		w.SetConnMaxIdleTime(0)
		w.SetConnMaxLifetime(0)
		r, err := sqlx.Open("sqlite", base+"&_pragma=query_only(1)")
		if err != nil {
			w.Close()
			return nil, err
		}
		n := max(4, 2*runtime.GOMAXPROCS(0))
		r.SetMaxOpenConns(n)
		r.SetMaxIdleConns(n)
		s.write, s.read = w, r
		s.batch = make(chan *redeemJob, maxBatch)
	case "postgres":
		s.f = flavorPostgres
		db, err := sqlx.Open("pgx", dsn)
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(32)
		db.SetMaxIdleConns(32)
		db.SetConnMaxIdleTime(5 * time.Minute)
		s.write, s.read = db, db
	default:
		return nil, fmt.Errorf("sqlstore: unknown storage kind %q", kind)
	}
	s.stop = make(chan struct{})
	if err := s.init(ctx, o); err != nil {
		s.Close()
		return nil, err
	}
	if s.batch != nil {
		s.batchDone = make(chan struct{})
		go s.runBatcher()
	}
	return s, nil
}

func (s *Store) init(ctx context.Context, o Options) error {
	if err := s.write.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlstore: connecting to %s: %w", s.f.name, err)
	}
	if o.Migrate {
		if _, err := migrate(ctx, s.write, s.f, o.Now()); err != nil {
			return fmt.Errorf("sqlstore: %w", err)
		}
	}
	v, err := s.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if v != LatestVersion() {
		return fmt.Errorf("sqlstore: database schema is at version %d, this build needs %d: run actas migrate", v, LatestVersion())
	}
	s.tokenState, err = s.read.PreparexContext(ctx, s.read.Rebind(`SELECT `+tokenCols+`, `+grantCols+`, n.support_enabled, n.allow_non_admin_grants
		FROM tokens t JOIN grants g ON g.id = t.grant_id JOIN tenants n ON n.id = g.tenant_id
		WHERE t.jti = ?`))
	if err != nil {
		return fmt.Errorf("sqlstore: preparing: %w", err)
	}
	return nil
}

// Migrate applies pending migrations and reports how many it applied.
func Migrate(ctx context.Context, kind, dsn string, now time.Time) (int, error) {
	s := &Store{}
	var db *sqlx.DB
	var err error
	switch kind {
	case "sqlite":
		s.f = flavorSQLite
		db, err = sqlx.Open("sqlite", "file:"+(&url.URL{Path: dsn}).EscapedPath()+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	case "postgres":
		s.f = flavorPostgres
		db, err = sqlx.Open("pgx", dsn)
	default:
		return 0, fmt.Errorf("sqlstore: unknown storage kind %q", kind)
	}
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return migrate(ctx, db, s.f, now)
}

// SchemaVersion returns the highest applied migration, 0 for none.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var n int
	if err := s.read.GetContext(ctx, &n, s.f.hasMigrations); err != nil {
		return 0, s.mapErr(err)
	}
	if n == 0 {
		return 0, nil
	}
	var v sql.NullInt64
	if err := s.read.GetContext(ctx, &v, `SELECT MAX(version) FROM schema_migrations`); err != nil {
		return 0, s.mapErr(err)
	}
	return int(v.Int64), nil
}

// Close stops the batcher and releases the connections.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.stop != nil {
			close(s.stop)
		}
		if s.batchDone != nil {
			<-s.batchDone
		}
	})
	if s.tokenState != nil {
		s.tokenState.Close()
	}
	s.stmtMu.Lock()
	s.closed = true
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = nil
	s.stmtMu.Unlock()
	err := s.write.Close()
	if s.read != s.write {
		err = errors.Join(err, s.read.Close())
	}
	return err
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.write.PingContext(ctx); err != nil {
		return s.mapErr(err)
	}
	var one int
	if err := s.read.GetContext(ctx, &one, `SELECT 1`); err != nil {
		return s.mapErr(err)
	}
	return nil
}

// mapErr maps driver errors to storage errors in one place.
func (s *Store) mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return storage.ErrNotFound
	case s.f.isUnique(err):
		return fmt.Errorf("%w: %v", storage.ErrAlreadyExists, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("%w: %v", storage.ErrUnavailable, err)
}

// tx runs fn in a write transaction, retrying serialisation failures.
func (s *Store) tx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	defer func() {
		s.stmtMu.Lock()
		n := len(s.wanted)
		s.stmtMu.Unlock()
		if n > 0 {
			s.prepareWanted(ctx)
		}
	}()
	for attempt := 0; ; attempt++ {
		err := s.tryTx(ctx, fn)
		if err == nil || attempt >= 4 || !s.f.isRetry(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
}

func (s *Store) tryTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	tx, err := s.write.BeginTxx(ctx, nil)
	if err != nil {
		return s.mapErr(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return s.mapErr(err)
	}
	return nil
}

// prepared returns q bound to tx, reusing a statement prepared once on
// the write pool: parsing SQL was a seventh of the CPU of a redemption. On a
// miss it prepares on tx itself (SQLite's one write connection is held by
// tx) and notes q; tx() prepares noted queries once the connection is free.
func (s *Store) prepared(ctx context.Context, tx *sqlx.Tx, q string) (*sqlx.Stmt, error) {
	s.stmtMu.Lock()
	st, ok := s.stmts[q]
	if !ok {
		if s.wanted == nil {
			s.wanted = map[string]bool{}
		}
		s.wanted[q] = true
	}
	s.stmtMu.Unlock()
	if ok {
		return tx.StmtxContext(ctx, st), nil
	}
	st, err := tx.PreparexContext(ctx, tx.Rebind(q))
	return st, s.mapErr(err)
}

// prepareWanted prepares the queries noted by prepared on the write pool.
func (s *Store) prepareWanted(ctx context.Context) {
	s.stmtMu.Lock()
	var qs []string
	for q := range s.wanted {
		qs = append(qs, q)
	}
	s.wanted = nil
	s.stmtMu.Unlock()
	for _, q := range qs {
		st, err := s.write.PreparexContext(ctx, s.write.Rebind(q))
		if err != nil {
			continue // prepared again on its next use
		}
		s.stmtMu.Lock()
		if _, dup := s.stmts[q]; dup || s.closed {
			st.Close()
		} else {
			if s.stmts == nil {
				s.stmts = map[string]*sqlx.Stmt{}
			}
			s.stmts[q] = st
		}
		s.stmtMu.Unlock()
	}
}

// queryRow runs a prepared single-row query in tx.
func (s *Store) queryRow(ctx context.Context, tx *sqlx.Tx, q string, args ...any) scanner {
	st, err := s.prepared(ctx, tx, q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowxContext(ctx, args...)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// exec runs a prepared statement in tx, mapping errors.
func (s *Store) exec(ctx context.Context, tx *sqlx.Tx, q string, args ...any) (int64, error) {
	st, err := s.prepared(ctx, tx, q)
	if err != nil {
		return 0, err
	}
	res, err := st.ExecContext(ctx, args...)
	if err != nil {
		return 0, s.mapErr(err)
	}
	n, err := res.RowsAffected()
	return n, s.mapErr(err)
}

func micro(t time.Time) int64 { return t.UnixMicro() }

func nullMicro(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func fromMicro(v int64) time.Time { return time.UnixMicro(v).UTC() }

func fromNull(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicro(v.Int64)
}

func jsonList(l []string) string {
	if l == nil {
		l = []string{}
	}
	b, _ := json.Marshal(l)
	return string(b)
}

func parseList(s string) ([]string, error) {
	var l []string
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, fmt.Errorf("%w: corrupt list column: %v", storage.ErrUnavailable, err)
	}
	return l, nil
}

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

// AppendAudit writes one event in its own transaction.
func (s *Store) AppendAudit(ctx context.Context, ev storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error { return s.insertAudit(ctx, tx, ev) })
}

// Tenant returns a tenant's setting.
func (s *Store) Tenant(ctx context.Context, id string) (storage.Tenant, error) {
	var t storage.Tenant
	var at int64
	err := s.read.QueryRowxContext(ctx, s.read.Rebind(`SELECT id, support_enabled, allow_non_admin_grants, changed_by, changed_at
		FROM tenants WHERE id = ?`), id).Scan(&t.ID, &t.SupportEnabled, &t.AllowNonAdminGrants, &t.ChangedBy, &at)
	if err != nil {
		return storage.Tenant{}, s.mapErr(err)
	}
	t.ChangedAt = fromMicro(at)
	return t, nil
}

// SetSupportAccess upserts the tenant and, when turning support off, ends
// every live grant of the tenant with its tokens.
func (s *Store) SetSupportAccess(ctx context.Context, t storage.Tenant, ev storage.AuditEvent) (int, error) {
	var ended int64
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		ended = 0
		if _, err := s.exec(ctx, tx, `INSERT INTO tenants (id, support_enabled, allow_non_admin_grants, changed_by, changed_at)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET support_enabled = excluded.support_enabled,
				allow_non_admin_grants = excluded.allow_non_admin_grants,
				changed_by = excluded.changed_by, changed_at = excluded.changed_at`,
			t.ID, t.SupportEnabled, t.AllowNonAdminGrants, t.ChangedBy, micro(t.ChangedAt)); err != nil {
			return err
		}
		if !t.SupportEnabled {
			n, err := s.endTenantGrants(ctx, tx, t.ID, t.ChangedAt, t.ChangedBy, "support_access_disabled")
			if err != nil {
				return err
			}
			ended = n
		}
		return s.insertAudit(ctx, tx, ev)
	})
	return int(ended), err
}

// endTenantGrants revokes every unrevoked grant of a tenant that has not
// expired, its tokens and refresh tokens, and voids its pending codes.
func (s *Store) endTenantGrants(ctx context.Context, tx *sqlx.Tx, tenant string, at time.Time, by, reason string) (int64, error) {
	n, err := s.exec(ctx, tx, `UPDATE grants SET revoked_at = ?, revoked_by = ?, revoke_reason = ?, code_hash = NULL
		WHERE tenant_id = ? AND revoked_at IS NULL AND expires_at > ?`, micro(at), by, reason, tenant, micro(at))
	if err != nil {
		return 0, err
	}
	if _, err := s.exec(ctx, tx, `UPDATE grants SET code_hash = NULL WHERE tenant_id = ? AND code_hash IS NOT NULL`, tenant); err != nil {
		return 0, err
	}
	for _, table := range []string{"tokens", "refresh_tokens"} {
		if _, err := s.exec(ctx, tx, `UPDATE `+table+` SET revoked_at = ?
			WHERE revoked_at IS NULL AND grant_id IN (SELECT id FROM grants WHERE tenant_id = ?)`, micro(at), tenant); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// CreateGrant stores a grant if the tenant's support access is on.
func (s *Store) CreateGrant(ctx context.Context, g storage.Grant, ev storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
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
			granted_by, granted_by_iss, granter_role, granter_claims, created_at, expires_at, code_hash, code_expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			g.ID, g.TenantID, g.Role, jsonList(g.Environments), jsonList(g.Resources), g.Ticket, g.TicketSystem, g.TicketSeverity,
			g.GrantedBy, g.GrantedByIss, g.GranterRole, claims, micro(g.CreatedAt), micro(g.ExpiresAt),
			g.CodeHash, micro(g.CodeExpiresAt)); err != nil {
			return err
		}
		return s.insertAudit(ctx, tx, ev)
	})
}

const grantCols = `g.id, g.tenant_id, g.role, g.environments, g.resources, g.ticket, g.granted_by, g.granted_by_iss,
	g.granter_role, g.granter_claims, g.created_at, g.expires_at, g.code_hash, g.code_expires_at, g.redeemed_at,
	g.engineer_sub, g.engineer_iss, g.engineer_email, g.revoked_at, g.revoked_by, g.revoke_reason,
	g.engineer_groups, g.engineer_mfa, g.engineer_claims, g.ticket_system, g.ticket_severity`

type scanner interface{ Scan(dest ...any) error }

// grantDest returns scan destinations for grantCols and a finish function
// that converts them into g.
func grantDest(g *storage.Grant) ([]any, func() error) {
	var envs, res, claims, engGroups, engClaims string
	var created, expires, codeExp int64
	var redeemed, revoked sql.NullInt64
	dest := []any{&g.ID, &g.TenantID, &g.Role, &envs, &res, &g.Ticket, &g.GrantedBy, &g.GrantedByIss,
		&g.GranterRole, &claims, &created, &expires, &g.CodeHash, &codeExp, &redeemed,
		&g.EngineerSub, &g.EngineerIss, &g.EngineerEmail, &revoked, &g.RevokedBy, &g.RevokeReason,
		&engGroups, &g.EngineerMFA, &engClaims, &g.TicketSystem, &g.TicketSeverity}
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
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	q += fmt.Sprintf(` ORDER BY g.created_at DESC, g.id DESC LIMIT %d`, limit)
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

// RevokeGrant ends a grant, its tokens and refresh tokens.
func (s *Store) RevokeGrant(ctx context.Context, tenantID, id string, at time.Time, by, reason string, ev storage.AuditEvent) (bool, error) {
	var changed bool
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		var err error
		changed, err = s.revokeGrantTx(ctx, tx, tenantID, id, at, by, reason)
		if err != nil || !changed {
			return err
		}
		return s.insertAudit(ctx, tx, ev)
	})
	return changed, err
}

func (s *Store) revokeGrantTx(ctx context.Context, tx *sqlx.Tx, tenantID, id string, at time.Time, by, reason string) (bool, error) {
	n, err := s.exec(ctx, tx, `UPDATE grants SET revoked_at = ?, revoked_by = ?, revoke_reason = ?, code_hash = NULL
		WHERE tenant_id = ? AND id = ? AND revoked_at IS NULL`, micro(at), by, reason, tenantID, id)
	if err != nil {
		return false, err
	}
	if n == 0 {
		var one int
		if err := tx.GetContext(ctx, &one, tx.Rebind(`SELECT 1 FROM grants WHERE tenant_id = ? AND id = ?`), tenantID, id); err != nil {
			return false, s.mapErr(err)
		}
		return false, nil
	}
	for _, table := range []string{"tokens", "refresh_tokens"} {
		if _, err := s.exec(ctx, tx, `UPDATE `+table+` SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL`, micro(at), id); err != nil {
			return false, err
		}
	}
	return true, nil
}

const (
	scopeTenant   = "tenant"
	scopeEngineer = "engineer"
)

// Redeem consumes a code with one conditional update; see storage.Store.
// On SQLite, concurrent redemptions are group-committed by the batcher.
func (s *Store) Redeem(ctx context.Context, p storage.RedeemParams, issue func(storage.Grant) (storage.Issue, error)) (storage.Grant, error) {
	if s.batch == nil {
		var g storage.Grant
		var result error
		err := s.tx(ctx, func(tx *sqlx.Tx) error {
			g, result = s.redeemInTx(ctx, tx, p, issue, false)
			var rf *refusal
			if errors.As(result, &rf) {
				return result // roll the whole transaction back
			}
			return abortOn(result)
		})
		var rf *refusal
		if errors.As(err, &rf) {
			return storage.Grant{}, rf.err
		}
		if err != nil {
			return storage.Grant{}, err
		}
		return g, result
	}
	job := &redeemJob{p: p, issue: issue, done: make(chan redeemResult, 1)}
	select {
	case s.batch <- job:
	case <-s.stop:
		return storage.Grant{}, fmt.Errorf("%w: store closed", storage.ErrUnavailable)
	case <-ctx.Done():
		return storage.Grant{}, ctx.Err()
	}
	r := <-job.done // a batch ends within the busy timeout; its outcome must be reported
	return r.g, r.err
}

// abortOn says which per-redemption outcomes must roll back the whole
// transaction: storage failures. Failures to redeem and refusals by issue
// are outcomes, not aborts.
func abortOn(err error) error {
	var rf *storage.RedeemFailure
	switch {
	case err == nil, errors.As(err, &rf), errors.Is(err, storage.ErrEngineerLocked):
		return nil
	case errors.Is(err, storage.ErrUnavailable), errors.Is(err, storage.ErrAlreadyExists):
		return err
	}
	return nil // issue refused: its savepoint (or the whole tx) is rolled back by redeemInTx
}

// refusal carries issue's error out of a transaction that must roll back.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }

type redeemJob struct {
	p     storage.RedeemParams
	issue func(storage.Grant) (storage.Issue, error)
	done  chan redeemResult
}

type redeemResult struct {
	g   storage.Grant
	err error
}

// maxBatch bounds one group commit.
const maxBatch = 64

// runBatcher group-commits redemptions on SQLite: it takes every queued
// redemption (up to maxBatch), runs each in its own savepoint inside one
// transaction and commits once, so one fsync serves the whole batch. It
// stops when the store closes.
func (s *Store) runBatcher() {
	defer close(s.batchDone)
	for {
		var first *redeemJob
		select {
		case first = <-s.batch:
		case <-s.stop:
			return
		}
		jobs := []*redeemJob{first}
	drain:
		for len(jobs) < maxBatch {
			select {
			case j := <-s.batch:
				jobs = append(jobs, j)
			default:
				break drain
			}
		}
		s.runBatch(jobs)
	}
}

func (s *Store) runBatch(jobs []*redeemJob) {
	ctx := context.Background() // one client's cancellation must not fail the others
	results := make([]redeemResult, len(jobs))
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		for i, j := range jobs {
			g, err := s.redeemInTx(ctx, tx, j.p, j.issue, true)
			if abort := abortOn(err); abort != nil {
				return abort
			}
			results[i] = redeemResult{g, err}
		}
		return nil
	})
	for i, j := range jobs {
		if err != nil {
			results[i] = redeemResult{err: err}
		}
		j.done <- results[i]
	}
}

// redeemInTx is one redemption inside tx. With savepoint, a refusal by
// issue rolls back only this redemption's statements.
func (s *Store) redeemInTx(ctx context.Context, tx *sqlx.Tx, p storage.RedeemParams, issue func(storage.Grant) (storage.Issue, error), savepoint bool) (storage.Grant, error) {
	var g storage.Grant
	engineerKey := p.Engineer.Iss + " " + p.Engineer.Sub // issuer URLs hold no spaces
	windowStart := micro(p.Now.Add(-p.FailureWindow))
	var count int
	var start int64
	err := s.queryRow(ctx, tx, `SELECT count, window_start FROM redeem_failures WHERE scope = ? AND subject = ?`,
		scopeEngineer, engineerKey).Scan(&count, &start)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return g, s.mapErr(err)
	}
	if err == nil && count >= p.MaxFailures && start > windowStart {
		return g, storage.ErrEngineerLocked
	}
	if savepoint {
		if _, err := tx.ExecContext(ctx, "SAVEPOINT redeem"); err != nil {
			return g, s.mapErr(err)
		}
	}
	release := func(keep bool) error {
		if !savepoint {
			return nil
		}
		if !keep {
			if _, err := tx.ExecContext(ctx, "ROLLBACK TO redeem"); err != nil {
				return s.mapErr(err)
			}
		}
		_, err := tx.ExecContext(ctx, "RELEASE redeem")
		return s.mapErr(err)
	}

	now := micro(p.Now)
	dest, finish := grantDest(&g)
	engClaims := string(p.Engineer.Claims)
	if engClaims == "" {
		engClaims = "{}"
	}
	err = s.queryRow(ctx, tx, `UPDATE grants SET code_hash = NULL, redeemed_at = ?,
			engineer_sub = ?, engineer_iss = ?, engineer_email = ?,
			engineer_groups = ?, engineer_mfa = ?, engineer_claims = ?
		WHERE tenant_id = ? AND code_hash = ? AND redeemed_at IS NULL AND revoked_at IS NULL
			AND code_expires_at > ? AND expires_at > ?
			AND EXISTS (SELECT 1 FROM tenants n WHERE n.id = grants.tenant_id AND n.support_enabled)
		RETURNING `+strings.ReplaceAll(grantCols, "g.", ""),
		now, p.Engineer.Sub, p.Engineer.Iss, p.Engineer.Email, jsonList(p.Engineer.Groups), p.Engineer.MFA, engClaims,
		p.TenantID, p.CodeHash, now, now).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		failure, err := s.countFailure(ctx, tx, p, engineerKey, windowStart)
		if err != nil {
			return g, err
		}
		if err := release(true); err != nil {
			return g, err
		}
		return storage.Grant{}, failure
	}
	if err != nil {
		return g, s.mapErr(err)
	}
	if err := finish(); err != nil {
		return g, err
	}
	is, ierr := issue(g)
	if ierr == nil {
		ierr = s.writeIssue(ctx, tx, is)
		if errors.Is(ierr, storage.ErrUnavailable) || errors.Is(ierr, storage.ErrAlreadyExists) {
			return g, ierr
		}
	}
	if ierr != nil {
		if !savepoint {
			return storage.Grant{}, &refusal{ierr}
		}
		if err := release(false); err != nil {
			return g, err
		}
		return storage.Grant{}, ierr
	}
	if err := release(true); err != nil {
		return g, err
	}
	return g, nil
}

// countFailure records a failed redemption for the engineer and the tenant
// (if it exists); at the tenant's limit it voids every pending code.
func (s *Store) countFailure(ctx context.Context, tx *sqlx.Tx, p storage.RedeemParams, engineerKey string, windowStart int64) (*storage.RedeemFailure, error) {
	f := &storage.RedeemFailure{}
	if _, err := s.bump(ctx, tx, scopeEngineer, engineerKey, p.Now, windowStart); err != nil {
		return nil, err
	}
	var one int
	err := tx.GetContext(ctx, &one, tx.Rebind(`SELECT 1 FROM tenants WHERE id = ?`), p.TenantID)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, s.mapErr(err)
	}
	if err == nil {
		n, err := s.bump(ctx, tx, scopeTenant, p.TenantID, p.Now, windowStart)
		if err != nil {
			return nil, err
		}
		if n >= p.MaxFailures {
			voided, err := s.exec(ctx, tx, `UPDATE grants SET code_hash = NULL, revoked_at = ?, revoked_by = 'system', revoke_reason = 'lockout'
				WHERE tenant_id = ? AND code_hash IS NOT NULL`, micro(p.Now), p.TenantID)
			if err != nil {
				return nil, err
			}
			if _, err := s.exec(ctx, tx, `DELETE FROM redeem_failures WHERE scope = ? AND subject = ?`, scopeTenant, p.TenantID); err != nil {
				return nil, err
			}
			f.Lockout, f.Voided = true, int(voided)
		}
	}
	if err := s.insertAudit(ctx, tx, p.FailureEvent); err != nil {
		return nil, err
	}
	if f.Lockout {
		ev := p.LockoutEvent
		ev.Detail = mergeDetail(ev.Detail, map[string]any{"voided_codes": f.Voided})
		if err := s.insertAudit(ctx, tx, ev); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func mergeDetail(detail []byte, extra map[string]any) []byte {
	m := map[string]any{}
	if len(detail) > 0 {
		_ = json.Unmarshal(detail, &m)
	}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// bump increments a failure counter, restarting it when its window has
// passed, and returns the new count.
func (s *Store) bump(ctx context.Context, tx *sqlx.Tx, scope, subject string, now time.Time, windowStart int64) (int, error) {
	var n int
	err := s.queryRow(ctx, tx, `INSERT INTO redeem_failures (scope, subject, count, window_start) VALUES (?, ?, 1, ?)
		ON CONFLICT (scope, subject) DO UPDATE SET
			count = CASE WHEN redeem_failures.window_start <= ? THEN 1 ELSE redeem_failures.count + 1 END,
			window_start = CASE WHEN redeem_failures.window_start <= ? THEN excluded.window_start ELSE redeem_failures.window_start END
		RETURNING count`, scope, subject, micro(now), windowStart, windowStart).Scan(&n)
	return n, s.mapErr(err)
}

func (s *Store) writeIssue(ctx context.Context, tx *sqlx.Tx, is storage.Issue) error {
	t := is.Token
	if _, err := s.exec(ctx, tx, `INSERT INTO tokens (jti, grant_id, client_id, audience, role, scope, issued_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, t.JTI, t.GrantID, t.ClientID, t.Audience, t.Role, t.Scope,
		micro(t.IssuedAt), micro(t.ExpiresAt)); err != nil {
		return err
	}
	if r := is.Refresh; r != nil {
		if _, err := s.exec(ctx, tx, `INSERT INTO refresh_tokens (hash, grant_id, client_id, audience, role, scope, issued_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, r.Hash, r.GrantID, r.ClientID, r.Audience, r.Role, r.Scope, micro(r.IssuedAt), micro(r.ExpiresAt)); err != nil {
			return err
		}
	}
	for _, ev := range is.Events {
		if err := s.insertAudit(ctx, tx, ev); err != nil {
			return err
		}
	}
	return nil
}

const refreshCols = `r.hash, r.grant_id, r.client_id, r.audience, r.role, r.scope, r.issued_at, r.expires_at, r.used_at, r.revoked_at`

func scanRefresh(row scanner, r *storage.RefreshToken, more ...any) error {
	var issued, expires int64
	var used, revoked sql.NullInt64
	if err := row.Scan(append([]any{&r.Hash, &r.GrantID, &r.ClientID, &r.Audience, &r.Role, &r.Scope, &issued, &expires, &used, &revoked}, more...)...); err != nil {
		return err
	}
	r.IssuedAt, r.ExpiresAt, r.UsedAt, r.RevokedAt = fromMicro(issued), fromMicro(expires), fromNull(used), fromNull(revoked)
	return nil
}

// Refresh consumes a refresh token once; see storage.Store.
func (s *Store) Refresh(ctx context.Context, hash []byte, clientID string, now time.Time, reuse storage.AuditEvent, issue func(storage.Grant, storage.RefreshToken) (storage.Issue, error)) (storage.Grant, error) {
	var g storage.Grant
	reused := false
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		reused = false
		var r storage.RefreshToken
		err := scanRefresh(s.queryRow(ctx, tx, `UPDATE refresh_tokens SET used_at = ?
			WHERE hash = ? AND client_id = ? AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?
			RETURNING `+strings.ReplaceAll(refreshCols, "r.", ""), micro(now), hash, clientID, micro(now)), &r)
		if errors.Is(err, sql.ErrNoRows) {
			// A used token presented again: the family is compromised.
			var grantID, tenantID, sub, act string
			err := s.queryRow(ctx, tx, `SELECT r.grant_id, g.tenant_id, g.granted_by, g.engineer_sub FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id
				WHERE r.hash = ? AND r.client_id = ? AND r.used_at IS NOT NULL`, hash, clientID).Scan(&grantID, &tenantID, &sub, &act)
			if errors.Is(err, sql.ErrNoRows) {
				return storage.ErrNotFound
			}
			if err != nil {
				return s.mapErr(err)
			}
			changed, err := s.revokeGrantTx(ctx, tx, tenantID, grantID, now, "system", "refresh_token_reuse")
			if err != nil {
				return err
			}
			if changed {
				ev := reuse
				ev.TenantID, ev.Target = tenantID, grantID
				ev.Detail = mergeDetail(ev.Detail, map[string]any{"sub": sub, "act": act})
				if err := s.insertAudit(ctx, tx, ev); err != nil {
					return err
				}
			}
			reused = true
			return nil
		}
		if err != nil {
			return s.mapErr(err)
		}
		g, err = s.scanGrant(s.queryRow(ctx, tx, `SELECT `+grantCols+` FROM grants g JOIN tenants n ON n.id = g.tenant_id
			WHERE g.id = ? AND g.revoked_at IS NULL AND g.expires_at > ? AND n.support_enabled`, r.GrantID, micro(now)))
		if err != nil {
			return err
		}
		is, err := issue(g, r)
		if err != nil {
			return err
		}
		return s.writeIssue(ctx, tx, is)
	})
	if err != nil {
		return storage.Grant{}, err
	}
	if reused {
		return storage.Grant{}, storage.ErrNotFound
	}
	return g, nil
}

// RefreshGrant returns a refresh token and its grant.
func (s *Store) RefreshGrant(ctx context.Context, hash []byte) (storage.RefreshToken, storage.Grant, error) {
	var r storage.RefreshToken
	var g storage.Grant
	dest, finish := grantDest(&g)
	err := scanRefresh(s.read.QueryRowxContext(ctx, s.read.Rebind(`SELECT `+refreshCols+`, `+grantCols+`
		FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.hash = ?`), hash), &r, dest...)
	if err != nil {
		return r, g, s.mapErr(err)
	}
	return r, g, finish()
}

const tokenCols = `t.jti, t.grant_id, t.client_id, t.audience, t.role, t.scope, t.issued_at, t.expires_at, t.revoked_at, t.first_used_at`

// TokenState reads a token with its grant and tenant toggle in one query.
func (s *Store) TokenState(ctx context.Context, jti string) (storage.TokenState, error) {
	var st storage.TokenState
	t := &st.Token
	var issued, expires int64
	var revoked, firstUsed sql.NullInt64
	gdest, finish := grantDest(&st.Grant)
	dest := append([]any{&t.JTI, &t.GrantID, &t.ClientID, &t.Audience, &t.Role, &t.Scope, &issued, &expires, &revoked, &firstUsed}, gdest...)
	dest = append(dest, &st.TenantEnabled, &st.AllowNonAdminGrants)
	if err := s.tokenState.QueryRowxContext(ctx, jti).Scan(dest...); err != nil {
		return storage.TokenState{}, s.mapErr(err)
	}
	t.IssuedAt, t.ExpiresAt, t.RevokedAt, t.FirstUsedAt = fromMicro(issued), fromMicro(expires), fromNull(revoked), fromNull(firstUsed)
	return st, finish()
}

// MarkTokenUsed records a token's first active introspection.
func (s *Store) MarkTokenUsed(ctx context.Context, jti string, at time.Time, ev storage.AuditEvent) (bool, error) {
	var changed bool
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `UPDATE tokens SET first_used_at = ? WHERE jti = ? AND first_used_at IS NULL`, micro(at), jti)
		if err != nil {
			return err
		}
		if changed = n > 0; !changed {
			return nil
		}
		return s.insertAudit(ctx, tx, ev)
	})
	return changed, err
}

// RevokeToken revokes one access token.
func (s *Store) RevokeToken(ctx context.Context, jti string, at time.Time, ev storage.AuditEvent) (bool, error) {
	var changed bool
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `UPDATE tokens SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL`, micro(at), jti)
		if err != nil {
			return err
		}
		changed = n > 0
		if !changed {
			return nil
		}
		return s.insertAudit(ctx, tx, ev)
	})
	return changed, err
}

// SigningKeys returns every key that is not retired.
func (s *Store) SigningKeys(ctx context.Context) ([]storage.SigningKey, error) {
	rows, err := s.read.QueryxContext(ctx, s.read.Rebind(`SELECT id, algorithm, private_sealed, public_jwk, state, created_at, activated_at, retire_at
		FROM signing_keys WHERE state <> ? ORDER BY created_at`), storage.KeyRetired)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	var out []storage.SigningKey
	for rows.Next() {
		var k storage.SigningKey
		var pub string
		var created int64
		var activated, retire sql.NullInt64
		if err := rows.Scan(&k.ID, &k.Algorithm, &k.PrivateSealed, &pub, &k.State, &created, &activated, &retire); err != nil {
			return nil, s.mapErr(err)
		}
		k.PublicJWK = []byte(pub)
		k.CreatedAt, k.ActivatedAt, k.RetireAt = fromMicro(created), fromNull(activated), fromNull(retire)
		out = append(out, k)
	}
	return out, s.mapErr(rows.Err())
}

// AddSigningKey stores a key.
func (s *Store) AddSigningKey(ctx context.Context, k storage.SigningKey, ev storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := s.exec(ctx, tx, `INSERT INTO signing_keys (id, algorithm, private_sealed, public_jwk, state, created_at, activated_at, retire_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, k.ID, k.Algorithm, k.PrivateSealed, string(k.PublicJWK), k.State,
			micro(k.CreatedAt), nullMicro(k.ActivatedAt), nullMicro(k.RetireAt)); err != nil {
			return err
		}
		return s.insertAudit(ctx, tx, ev)
	})
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
			q := `SELECT id, granted_by, engineer_sub FROM grants WHERE tenant_id = ? AND ticket = ? AND revoked_at IS NULL AND expires_at > ?`
			args := []any{u.TenantID, u.TicketID, micro(u.Now)}
			if u.System != "" {
				q += ` AND ticket_system = ?`
				args = append(args, u.System)
			}
			var rows []struct {
				ID  string `db:"id"`
				Sub string `db:"granted_by"`
				Act string `db:"engineer_sub"`
			}
			if err := tx.SelectContext(ctx, &rows, tx.Rebind(q+` ORDER BY id`), args...); err != nil {
				return s.mapErr(err)
			}
			for _, g := range rows {
				if _, err := s.revokeGrantTx(ctx, tx, u.TenantID, g.ID, u.Now, "system", u.Reason); err != nil {
					return err
				}
				ev := u.GrantEvent
				ev.Target = g.ID
				ev.Detail = mergeDetail(ev.Detail, map[string]any{"sub": g.Sub, "act": g.Act})
				if err := s.insertAudit(ctx, tx, ev); err != nil {
					return err
				}
				ended = append(ended, g.ID)
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
	return s.queryAudit(ctx, fmt.Sprintf(`SELECT `+auditCols+` FROM audit_events WHERE tenant_id = ? AND COALESCE(seq, 0) > ?
		ORDER BY seq, id LIMIT %d`, limit), tenantID, afterSeq)
}

// RotateKeys rotates signing keys in one transaction; see storage.Store.
func (s *Store) RotateKeys(ctx context.Context, p storage.RotateParams) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		now := micro(p.Now)
		if _, err := s.exec(ctx, tx, `UPDATE signing_keys SET state = ? WHERE state = ? AND retire_at <= ?`,
			storage.KeyRetired, storage.KeyPrevious, now); err != nil {
			return err
		}
		n, err := s.exec(ctx, tx, `UPDATE signing_keys SET state = ?, retire_at = ? WHERE id = ? AND state = ?`,
			storage.KeyPrevious, micro(p.RetireAt), p.ExpectCurrent, storage.KeyCurrent)
		if err != nil {
			return err
		}
		if n != 1 {
			return storage.ErrConflict
		}
		n, err = s.exec(ctx, tx, `UPDATE signing_keys SET state = ?, activated_at = ? WHERE state = ?`,
			storage.KeyCurrent, now, storage.KeyNext)
		if err != nil {
			return err
		}
		if n != 1 {
			return storage.ErrConflict
		}
		k := p.NewNext
		if _, err := s.exec(ctx, tx, `INSERT INTO signing_keys (id, algorithm, private_sealed, public_jwk, state, created_at)
			VALUES (?, ?, ?, ?, ?, ?)`, k.ID, k.Algorithm, k.PrivateSealed, string(k.PublicJWK), storage.KeyNext, micro(k.CreatedAt)); err != nil {
			return err
		}
		return s.insertAudit(ctx, tx, p.Event)
	})
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
