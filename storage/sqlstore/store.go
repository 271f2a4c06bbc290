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

	"github.com/actas/actas/internal/boundcache"
	"github.com/actas/actas/storage"
)

// Store is storage.Store on SQLite or PostgreSQL.
type Store struct {
	f     flavor
	write *sqlx.DB // SQLite: one connection, BEGIN IMMEDIATE
	read  *sqlx.DB // SQLite: a pool of read-only connections; PostgreSQL: == write
	// checkpoint is SQLite's checkpointer connection (runCheckpoints).
	checkpoint *sqlx.DB

	tokenState *sqlx.Stmt
	// stateVersion reads the counter that every change able to end or
	// narrow a live token increments; states holds token states read at a
	// version (see TokenState).
	stateVersion *sql.Stmt
	versions     *versionReads
	states       *boundcache.Cache[string, versionedState]

	// The group-commit batchers of Redeem, one goroutine each: one on
	// SQLite (one writer), pgBatchers on PostgreSQL.
	batches  []chan *batchJob
	stop     chan struct{}
	batchers sync.WaitGroup
	// batchersGone is closed once every batcher has returned.
	batchersGone chan struct{}
	closeOnce    sync.Once

	stmtMu sync.Mutex
	stmts  map[string]*sqlx.Stmt // prepared on write, by query text
	wanted map[string]bool       // queries to prepare once the writer is free
	closed bool

	auditKey   []byte // HMAC key of the audit chain
	pruneBatch int    // rows per retention transaction

	// onOutbox runs after a commit that queued outbox messages, so that
	// the sender need not wait for its next poll.
	onOutbox func()
	txs      sync.Map // *sqlx.Tx -> *txState, while the transaction runs

	// logoutClients take OIDC Back-Channel Logout; set once before serving.
	logoutClients map[string]bool
}

// OnOutbox sets fn to run (it must not block) after every commit that
// queued outbox messages.
func (s *Store) OnOutbox(fn func()) { s.onOutbox = fn }

var _ storage.Store = (*Store)(nil)

// Options tune Open.
type Options struct {
	// Migrate applies pending migrations; otherwise a database behind the
	// binary's schema is an error.
	Migrate bool
	Now     func() time.Time
	// AuditKey keys the audit chain's HMAC; at least 32 bytes, required.
	AuditKey []byte
	// PruneBatch bounds the rows one retention transaction touches
	// (default 1000); tests lower it to cross batch boundaries.
	PruneBatch int
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
	s := &Store{auditKey: o.AuditKey, pruneBatch: o.PruneBatch}
	if s.pruneBatch <= 0 {
		s.pruneBatch = 1000
	}
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
			"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=temp_store(MEMORY)"
		w, err := sqlx.Open("sqlite", base+fmt.Sprintf("&_pragma=wal_autocheckpoint(0)&_pragma=journal_size_limit(%d)&_txlock=immediate", walSizeLimit))
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
		c, err := sqlx.Open("sqlite", base)
		if err != nil {
			w.Close()
			r.Close()
			return nil, err
		}
		c.SetMaxOpenConns(1)
		s.write, s.read, s.checkpoint = w, r, c
		s.batches = make([]chan *batchJob, 1)
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
		s.batches = make([]chan *batchJob, pgBatchers)
	default:
		return nil, fmt.Errorf("sqlstore: unknown storage kind %q", kind)
	}
	s.stop, s.batchersGone = make(chan struct{}), make(chan struct{})
	if err := s.init(ctx, o); err != nil {
		s.Close()
		return nil, err
	}
	for i := range s.batches {
		s.batches[i] = make(chan *batchJob, maxBatch)
		s.batchers.Go(func() { s.runBatcher(s.batches[i]) })
	}
	if s.checkpoint != nil {
		s.batchers.Go(func() { s.runCheckpoints(s.checkpoint) })
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
	if s.stateVersion, err = s.read.PrepareContext(ctx, `SELECT v FROM state_version WHERE id = 1`); err != nil {
		return fmt.Errorf("sqlstore: preparing: %w", err)
	}
	s.states = boundcache.New[string, versionedState](65536)
	s.versions = &versionReads{read: func(ctx context.Context) (int64, error) {
		var v int64
		err := s.stateVersion.QueryRowContext(ctx).Scan(&v)
		return v, s.mapErr(err)
	}}
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

// DBs returns the connection pools by role, for pool metrics.
func (s *Store) DBs() map[string]*sql.DB {
	if s.read == s.write {
		return map[string]*sql.DB{"main": s.write.DB}
	}
	return map[string]*sql.DB{"write": s.write.DB, "read": s.read.DB}
}

// Close stops the batcher and releases the connections.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.stop != nil {
			close(s.stop)
		}
		s.batchers.Wait()
		if s.batchersGone != nil {
			close(s.batchersGone)
		}
	})
	if s.tokenState != nil {
		s.tokenState.Close()
	}
	if s.stateVersion != nil {
		s.stateVersion.Close()
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
	if s.checkpoint != nil {
		err = errors.Join(err, s.checkpoint.Close())
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
	st := &txState{heads: map[string]chainHead{}, notify: map[string]*recipients{}, granters: map[string][]byte{}}
	s.txs.Store(tx, st)
	defer s.txs.Delete(tx)
	err = fn(tx)
	if err == nil {
		err = s.flushHeads(ctx, tx)
	}
	if err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return s.mapErr(err)
	}
	if st.queued && s.onOutbox != nil {
		s.onOutbox()
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

// marks is n parameter marks, "?, ?, ?": an IN list, or a VALUES row.
func marks(n int) string { return strings.Repeat("?, ", n-1) + "?" }

// values is n rows of width parameter marks each, for a VALUES list.
func values(width, n int) string {
	row := "(" + marks(width) + ")"
	return strings.Repeat(row+", ", n-1) + row
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
