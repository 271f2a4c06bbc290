package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

const (
	scopeTenant   = "tenant"
	scopeEngineer = "engineer"
)

// Redeem consumes a code with one conditional update; see storage.Store.
// Concurrent redemptions are group-committed: the tenant's batcher runs
// them in one transaction (see runBatcher).
func (s *Store) Redeem(ctx context.Context, p storage.RedeemParams, issue func(storage.Grant, storage.Tenant) (storage.Issue, error)) (storage.Grant, error) {
	return s.inBatch(ctx, p.TenantID, s.redemptionJob(p, issue))
}

// redemptionJob is a redemption for a batch: made alone by redeemInTx,
// or together with the batch's others by redeemAll.
func (s *Store) redemptionJob(p storage.RedeemParams, issue func(storage.Grant, storage.Tenant) (storage.Issue, error)) *batchJob {
	return &batchJob{
		write: func(ctx context.Context, tx *sqlx.Tx) (storage.Grant, error) {
			return s.redeemInTx(ctx, tx, p, issue)
		},
		redeem: &redemption{p, issue},
	}
}

// inBatch runs job.write in tenant's batcher, in the savepoint "redeem" of a
// transaction shared with the other writes queued there, and returns once
// that transaction has committed or failed. write either succeeds, or
// leaves nothing behind (rolling back to the savepoint itself, as undo
// does) and returns its outcome; a storage failure fails the whole batch.
func (s *Store) inBatch(ctx context.Context, tenant string, job *batchJob) (storage.Grant, error) {
	job.done = make(chan batchResult, 1)
	select {
	case s.batches[shard(tenant, len(s.batches))] <- job:
	case <-s.stop:
		return storage.Grant{}, fmt.Errorf("%w: store closed", storage.ErrUnavailable)
	case <-ctx.Done():
		return storage.Grant{}, ctx.Err()
	}
	// A batch ends within the busy timeout, and its outcome must be
	// reported: wait for it, unless the batchers stopped before taking the
	// job.
	select {
	case r := <-job.done:
		return r.g, r.err
	case <-s.batchersGone:
		select {
		case r := <-job.done:
			return r.g, r.err
		default:
			return storage.Grant{}, fmt.Errorf("%w: store closed", storage.ErrUnavailable)
		}
	}
}

// undo rolls back what the current write of a batch did, keeping the
// savepoint "redeem", and the audit chain heads it moved (heads, from
// headsAt when it began).
func (s *Store) undo(ctx context.Context, tx *sqlx.Tx, heads map[string]chainHead) error {
	if _, err := tx.ExecContext(ctx, "ROLLBACK TO redeem"); err != nil {
		return s.mapErr(err)
	}
	s.restoreHeads(tx, heads)
	return nil
}

// undoneOnError is a batch job of write, whose failure undoes what it
// wrote and is its outcome.
func (s *Store) undoneOnError(write func(context.Context, *sqlx.Tx) error) *batchJob {
	return &batchJob{write: func(ctx context.Context, tx *sqlx.Tx) (storage.Grant, error) {
		heads := s.headsAt(tx)
		err := write(ctx, tx)
		if err != nil {
			if u := s.undo(ctx, tx, heads); u != nil {
				return storage.Grant{}, u
			}
		}
		return storage.Grant{}, err
	}}
}

// shard picks a tenant's batcher: one tenant's redemptions are always
// batched together, so two batches never wait for each other's audit
// chain heads.
func shard(tenant string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(tenant))
	return int(h.Sum32() % uint32(n))
}

// abortOn says which outcomes of a batched write must roll back the whole
// transaction: storage failures. Anything else is the write's own outcome
// (a failure to redeem, a refusal by issue, a code or id that collided),
// and the write rolled back its own savepoint (undo) where it had written.
func abortOn(err error) error {
	if errors.Is(err, storage.ErrUnavailable) {
		return err
	}
	return nil
}

type batchJob struct {
	write func(context.Context, *sqlx.Tx) (storage.Grant, error)
	// redeem is the redemption write makes, if it makes one: redeemAll
	// may make it together with the batch's others instead.
	redeem *redemption
	done   chan batchResult
}

type redemption struct {
	p     storage.RedeemParams
	issue func(storage.Grant, storage.Tenant) (storage.Issue, error)
}

type batchResult struct {
	g   storage.Grant
	err error
}

// maxBatch bounds one group commit.
const maxBatch = 64

// pgBatchers is how many batch transactions run at once on PostgreSQL:
// two overlap one's round trips and commit with the other's statements.
// More split the same load into smaller batches, which cost the server
// more per write: with four, an exchange took 330 µs of its CPU against
// 260 µs with two, and throughput fell (actas-load, 64 connections). One
// makes larger batches still, cheaper for the server, but while it waits
// for a commit nothing else runs: no more throughput in four sessions
// interleaved with two.
const pgBatchers = 2

// runBatcher group-commits grants, redemptions and first uses (inBatch):
// it takes every queued write of its shard (up to maxBatch), runs each in
// its own savepoint inside one transaction and commits once, so one fsync
// serves the whole batch, and on PostgreSQL each audit chain head is
// locked once per batch, not once per write. It stops when the store
// closes.
func (s *Store) runBatcher(batch chan *batchJob) {
	for {
		var first *batchJob
		select {
		case first = <-batch:
		case <-s.stop:
			return
		}
		jobs := []*batchJob{first}
	drain:
		for len(jobs) < maxBatch {
			select {
			case j := <-batch:
				jobs = append(jobs, j)
			default:
				break drain
			}
		}
		s.runBatch(jobs)
	}
}

func (s *Store) runBatch(jobs []*batchJob) {
	ctx := context.Background() // one client's cancellation must not fail the others
	results := make([]batchResult, len(jobs))
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		_, err := s.batchTx(ctx, tx, jobs, results)
		return err
	})
	for i, j := range jobs {
		if err != nil {
			results[i] = batchResult{err: err}
		}
		j.done <- results[i]
	}
}

// batchTx makes jobs' writes in tx, setting their results, and returns
// how many redeemAll made together.
func (s *Store) batchTx(ctx context.Context, tx *sqlx.Tx, jobs []*batchJob, results []batchResult) (int, error) {
	settled, err := s.redeemAll(ctx, tx, jobs, results)
	if err != nil {
		return 0, err
	}
	// Each other write runs in the savepoint "redeem": one statement
	// releases the last one's and opens the next one's.
	step, bulk := "SAVEPOINT redeem", 0
	for i, j := range jobs {
		if settled != nil && settled[i] {
			bulk++
			continue
		}
		if _, err := tx.ExecContext(ctx, step); err != nil {
			return 0, s.mapErr(err)
		}
		step = "RELEASE redeem; SAVEPOINT redeem"
		g, err := j.write(ctx, tx)
		if abort := abortOn(err); abort != nil {
			return 0, abort
		}
		results[i] = batchResult{g, err}
	}
	if bulk == len(jobs) {
		return bulk, nil
	}
	_, err = tx.ExecContext(ctx, "RELEASE redeem")
	return bulk, s.mapErr(err)
}

// redeemInTx is one redemption inside tx, in the savepoint "redeem" that
// batchTx opened: a refusal by issue rolls back only this redemption's
// statements. The lockout check, the conditional update, failure counting
// and the issue callback share the savepoint's lifetime, so they stay in
// one function.
func (s *Store) redeemInTx(ctx context.Context, tx *sqlx.Tx, p storage.RedeemParams, issue func(storage.Grant, storage.Tenant) (storage.Issue, error)) (storage.Grant, error) {
	var g storage.Grant
	engineerKey := engineerKey(p.Engineer)
	windowStart := micro(p.Now.Add(-p.FailureWindow))
	heads := s.headsAt(tx)

	dest, finish := grantDest(&g)
	tenant := storage.Tenant{ID: p.TenantID, SupportEnabled: true} // the update requires it
	// A locked-out engineer redeems nothing, not even a live code; which
	// of the two it was is read only when nothing was redeemed.
	err := s.queryRow(ctx, tx, redeemOne, redeemArgs(p)...).Scan(append(dest, &tenant.AllowNonAdminGrants)...)
	if errors.Is(err, sql.ErrNoRows) {
		var count int
		var start int64
		err := s.queryRow(ctx, tx, `SELECT count, window_start FROM redeem_failures WHERE scope = ? AND subject = ?`,
			scopeEngineer, engineerKey).Scan(&count, &start)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return g, s.mapErr(err)
		}
		if err == nil && count >= p.MaxFailures && start > windowStart {
			return storage.Grant{}, storage.ErrEngineerLocked
		}
		failure, err := s.countFailure(ctx, tx, p, engineerKey, windowStart)
		if err != nil {
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
	s.state(tx).granters[g.ID] = g.GranterClaims // for the grant.redeem notice
	is, ierr := issue(g, tenant)
	if ierr == nil {
		ierr = s.writeIssue(ctx, tx, is)
		if errors.Is(ierr, storage.ErrUnavailable) {
			return g, ierr
		}
	}
	if ierr != nil {
		if err := s.undo(ctx, tx, heads); err != nil {
			return g, err
		}
		return storage.Grant{}, ierr
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
			// The lockout event (below) names how many; no event per code.
			voidedIDs, err := s.endGrants(ctx, tx, p.TenantID, `code_hash IS NOT NULL`, nil, p.Now, "system", "lockout", nil)
			if err != nil {
				return nil, err
			}
			voided := len(voidedIDs)
			if _, err := s.exec(ctx, tx, `DELETE FROM redeem_failures WHERE scope = ? AND subject = ?`, scopeTenant, p.TenantID); err != nil {
				return nil, err
			}
			f.Lockout, f.Voided = true, voided
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
