package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

// redeemable is the condition under which a redemption consumes a grant
// row: the code is live and the engineer not locked out. Its placeholders
// are the redemption's values: parameters in redeemInTx, columns of the
// batch's rows in redeemAll.
const redeemable = `grants.tenant_id = {tenant} AND grants.code_hash = {code}
	AND grants.redeemed_at IS NULL AND grants.revoked_at IS NULL
	AND grants.code_expires_at > {now} AND grants.expires_at > {now}
	AND EXISTS (SELECT 1 FROM tenants n WHERE n.id = grants.tenant_id AND n.support_enabled)
	AND NOT EXISTS (SELECT 1 FROM redeem_failures f WHERE f.scope = '` + scopeEngineer + `' AND f.subject = {engineer}
		AND f.count >= {maxfail} AND f.window_start > {since})`

// redeemSet is what a redemption writes, as SET assignments.
const redeemSet = `code_hash = NULL, redeemed_at = {now}, engineer_sub = {sub}, engineer_iss = {iss},
	engineer_email = {email}, engineer_groups = {egroups}, engineer_mfa = {mfa}, engineer_claims = {claims}`

// redeemReturning is what a redemption reads of the grant it bound.
var redeemReturning = strings.ReplaceAll(grantCols, "g.", "grants.") +
	`, (SELECT n.allow_non_admin_grants FROM tenants n WHERE n.id = grants.tenant_id)`

// redeemOne is a redemption's update with parameters, in the order of
// redeemArgs.
var redeemOne = `UPDATE grants SET ` + params.Replace(redeemSet) + ` WHERE ` + params.Replace(redeemable) +
	` RETURNING ` + redeemReturning

// params and columns fill redeemable's and redeemSet's placeholders with
// parameters, or with the columns of a batch's rows, v.
var (
	params = strings.NewReplacer("{tenant}", "?", "{code}", "?", "{now}", "?", "{engineer}", "?", "{maxfail}", "?", "{since}", "?",
		"{sub}", "?", "{iss}", "?", "{email}", "?", "{egroups}", "?", "{mfa}", "?", "{claims}", "?")
	columns = strings.NewReplacer("{", "v.", "}", "")
)

// redeemArgs are redeemOne's arguments for p.
func redeemArgs(p storage.RedeemParams) []any {
	r := newRedeemRow(0, p)
	return []any{r.now, r.sub, r.iss, r.email, r.groups, r.mfa, r.claims,
		r.tenant, r.code, r.now, r.now, r.engineer, r.max, r.since}
}

// redeemRow is what one redemption's statement is given; i is its job's
// place in the batch.
type redeemRow struct {
	i                                                 int
	tenant, engineer, sub, iss, email, groups, claims string
	code                                              []byte
	now, since                                        int64
	max                                               int
	mfa                                               bool
}

func newRedeemRow(i int, p storage.RedeemParams) redeemRow {
	claims := string(p.Engineer.Claims)
	if claims == "" {
		claims = "{}"
	}
	return redeemRow{
		i: i, tenant: p.TenantID, code: p.CodeHash, now: micro(p.Now), since: micro(p.Now.Add(-p.FailureWindow)), max: p.MaxFailures,
		engineer: engineerKey(p.Engineer), sub: p.Engineer.Sub, iss: p.Engineer.Iss, email: p.Engineer.Email,
		groups: jsonList(p.Engineer.Groups), mfa: p.Engineer.MFA, claims: claims,
	}
}

// engineerKey is the subject of an engineer's failure counter.
func engineerKey(e storage.Engineer) string { return e.Iss + " " + e.Sub } // issuer URLs hold no spaces

// redeemAllSQL (PostgreSQL) updates every grant a batch's redemptions
// consume, in one statement: round trips to a database server, not the
// statements, are what a redemption costs there. Its rows come as
// arrays, so the statement is the same for any batch.
var redeemAllSQL = `UPDATE grants SET ` + columns.Replace(redeemSet) + `
	FROM unnest(?::int[], ?::text[], ?::bytea[], ?::bigint[], ?::bigint[], ?::text[], ?::int[], ?::text[], ?::text[],
		?::text[], ?::text[], ?::boolean[], ?::text[])
		AS v(i, tenant, code, now, since, engineer, maxfail, sub, iss, email, egroups, mfa, claims)
	WHERE ` + columns.Replace(redeemable) + `
	RETURNING v.i, ` + redeemReturning

// redeemAll makes the batch's redemptions (jobs with redeem set) in a few
// statements instead of a few each, when every one of them succeeds: each
// code is live, each engineer not locked out, issue accepts each grant and
// nothing collides. Then it sets their results and returns which jobs it
// settled. Otherwise it leaves nothing behind and settles none, and the
// batch makes them one by one, counting failures in turn, so that no
// guess of a code gets past a lockout it would meet alone. A batch is a
// set of concurrent requests: redemptions that all succeed may be ordered
// as if each came first. Only a storage failure is returned.
func (s *Store) redeemAll(ctx context.Context, tx *sqlx.Tx, jobs []*batchJob, results []batchResult) ([]bool, error) {
	var idx []int
	for i, j := range jobs {
		if j.redeem != nil {
			idx = append(idx, i)
		}
	}
	if len(idx) < 2 {
		return nil, nil
	}
	heads := s.headsAt(tx)
	if _, err := tx.ExecContext(ctx, "SAVEPOINT bulk"); err != nil {
		return nil, s.mapErr(err)
	}
	done, err := s.tryRedeemAll(ctx, tx, jobs, idx, results)
	if done || errors.Is(err, storage.ErrUnavailable) {
		settled := make([]bool, len(jobs))
		for _, i := range idx {
			settled[i] = done
		}
		return settled, err
	}
	if _, err := tx.ExecContext(ctx, "ROLLBACK TO bulk"); err != nil {
		return nil, s.mapErr(err)
	}
	s.restoreHeads(tx, heads)
	return nil, nil
}

// tryRedeemAll is redeemAll's attempt, in the savepoint "bulk"; false if
// not every redemption succeeded.
func (s *Store) tryRedeemAll(ctx context.Context, tx *sqlx.Tx, jobs []*batchJob, idx []int, results []batchResult) (bool, error) {
	rows := make([]redeemRow, len(idx))
	for k, i := range idx {
		rows[k] = newRedeemRow(i, jobs[i].redeem.p)
	}
	redeem := s.redeemRows
	if s.f.name == flavorSQLite.name {
		redeem = s.redeemRowsSQLite
	}
	got, err := redeem(ctx, tx, rows)
	if err != nil || len(got) < len(rows) {
		return false, err // a failure to redeem: counted one by one
	}
	var issues []storage.Issue
	for _, i := range idx {
		g, p := got[i], jobs[i].redeem.p
		s.state(tx).granters[g.ID] = g.GranterClaims // for the grant.redeem notice
		is, err := jobs[i].redeem.issue(g.Grant, storage.Tenant{ID: p.TenantID, SupportEnabled: true, AllowNonAdminGrants: g.allowNonAdmin})
		if err != nil {
			return false, nil // refused: made again alone, to be undone alone
		}
		issues = append(issues, is)
	}
	if err := s.writeIssues(ctx, tx, issues); err != nil {
		return false, err
	}
	for _, i := range idx {
		results[i] = batchResult{g: got[i].Grant}
	}
	return true, nil
}

// bound is a grant a redemption bound, with its tenant's setting.
type bound struct {
	storage.Grant
	allowNonAdmin bool
}

// scanBound scans redeemReturning's columns after lead.
func scanBound(rows *sql.Rows, lead ...any) (bound, error) {
	var b bound
	dest, finish := grantDest(&b.Grant)
	if err := rows.Scan(append(append(lead, dest...), &b.allowNonAdmin)...); err != nil {
		return b, err
	}
	return b, finish()
}

// redeemRows (PostgreSQL) makes the rows' redemptions with redeemAllSQL
// and returns the grants bound, by job.
func (s *Store) redeemRows(ctx context.Context, tx *sqlx.Tx, rs []redeemRow) (map[int]bound, error) {
	cols := make([][]any, len(rs))
	for k, r := range rs {
		cols[k] = []any{r.i, r.tenant, r.code, r.now, r.since, r.engineer, r.max, r.sub, r.iss, r.email, r.groups, r.mfa, r.claims}
	}
	rows, err := s.queryRows(ctx, tx, redeemAllSQL, arrays(cols, 13)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	got := map[int]bound{}
	for rows.Next() {
		var i int
		b, err := scanBound(rows, &i)
		if err != nil {
			return nil, s.mapErr(err)
		}
		got[i] = b
	}
	return got, s.mapErr(rows.Err())
}

// redeemRowsSQLite is redeemRows in two statements: SQLite's UPDATE ...
// FROM returns nothing of the rows it joined, so the grants are found
// first and then updated by id, inside the one writer's transaction.
func (s *Store) redeemRowsSQLite(ctx context.Context, tx *sqlx.Tx, rs []redeemRow) (map[int]bound, error) {
	var find, set []any
	for k, r := range rs {
		find = append(find, k, r.tenant, r.code, r.now, r.since, r.engineer, r.max)
	}
	rows, err := s.queryRows(ctx, tx, `WITH v(k, tenant, code, now, since, engineer, maxfail) AS (VALUES `+
		values(7, len(rs))+`) SELECT v.k, grants.id FROM v JOIN grants ON `+columns.Replace(redeemable), find...)
	if err != nil {
		return nil, err
	}
	row := map[string]redeemRow{} // by grant id
	for rows.Next() {
		var k int
		var id string
		if err := rows.Scan(&k, &id); err != nil {
			rows.Close()
			return nil, s.mapErr(err)
		}
		row[id] = rs[k] // a code twice binds its grant once: fewer grants than rows
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(row) < len(rs) {
		return nil, s.mapErr(err)
	}
	for id, r := range row {
		set = append(set, id, r.now, r.sub, r.iss, r.email, r.groups, r.mfa, r.claims)
	}
	rows, err = s.queryRows(ctx, tx, `WITH v(id, now, sub, iss, email, egroups, mfa, claims) AS (VALUES `+values(8, len(row))+`)
		UPDATE grants SET `+columns.Replace(redeemSet)+` FROM v WHERE grants.id = v.id RETURNING `+redeemReturning, set...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	got := map[int]bound{}
	for rows.Next() {
		b, err := scanBound(rows)
		if err != nil {
			return nil, s.mapErr(err)
		}
		got[row[b.ID].i] = b
	}
	return got, s.mapErr(rows.Err())
}

// arrays turns rows of width values into width arrays (PostgreSQL
// parameters for unnest), each typed by its first value; no rows give
// NULL arrays, which unnest into none.
func arrays(rows [][]any, width int) []any {
	out := make([]any, width)
	if len(rows) == 0 {
		return out
	}
	for c := range width {
		switch rows[0][c].(type) {
		case string:
			out[c] = column[string](rows, c)
		case []byte:
			out[c] = column[[]byte](rows, c)
		case int64:
			out[c] = column[int64](rows, c)
		case int:
			out[c] = column[int](rows, c)
		case bool:
			out[c] = column[bool](rows, c)
		default:
			panic(fmt.Sprintf("sqlstore: no array of %T", rows[0][c]))
		}
	}
	return out
}

func column[T any](rows [][]any, c int) []T {
	out := make([]T, len(rows))
	for k, r := range rows {
		out[k] = r[c].(T)
	}
	return out
}

const (
	tokenInsertCols   = `jti, grant_id, client_id, audience, role, scope, issued_at, expires_at, jkt, sid`
	refreshInsertCols = `hash, grant_id, client_id, audience, role, scope, issued_at, expires_at, jkt, sid`
	// tokenArrays unnests tokenInsertCols' or refreshInsertCols' arrays,
	// whose first column is of the type it is given.
	tokenArrays = `SELECT * FROM unnest(?::%s[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::bigint[], ?::bigint[], ?::text[], ?::text[])`
)

// writeIssue writes what one redemption issued; see writeIssues.
func (s *Store) writeIssue(ctx context.Context, tx *sqlx.Tx, is storage.Issue) error {
	return s.writeIssues(ctx, tx, []storage.Issue{is})
}

// writeIssues writes what redemptions issued: their access tokens,
// refresh tokens and events. On PostgreSQL in one statement: the tokens,
// as arrays, ride as data-modifying CTEs of the events' insert; on SQLite
// in one statement per table.
func (s *Store) writeIssues(ctx context.Context, tx *sqlx.Tx, issues []storage.Issue) error {
	var tokens, refreshes [][]any
	var events []storage.AuditEvent
	for _, is := range issues {
		// A redemption made in a browser binds the grant and issues
		// nothing yet: the authorization code issues later.
		if t := is.Token; t.JTI != "" {
			tokens = append(tokens, []any{t.JTI, t.GrantID, t.ClientID, t.Audience, t.Role, t.Scope, micro(t.IssuedAt), micro(t.ExpiresAt), t.JKT, t.SID})
		}
		if r := is.Refresh; r != nil {
			refreshes = append(refreshes, []any{r.Hash, r.GrantID, r.ClientID, r.Audience, r.Role, r.Scope, micro(r.IssuedAt), micro(r.ExpiresAt), r.JKT, r.SID})
		}
		events = append(events, is.Events...)
	}
	if s.f.name == flavorPostgres.name {
		with := &cte{sql: `WITH t AS (INSERT INTO tokens (` + tokenInsertCols + `) ` + fmt.Sprintf(tokenArrays, "text") + `),
			r AS (INSERT INTO refresh_tokens (` + refreshInsertCols + `) ` + fmt.Sprintf(tokenArrays, "bytea") + `) `,
			args: append(arrays(tokens, 10), arrays(refreshes, 10)...)}
		if len(events) > 0 {
			return s.insertAuditsWith(ctx, tx, events, with)
		}
		_, err := s.exec(ctx, tx, with.sql+`SELECT 1`, with.args...)
		return err
	}
	for _, in := range []struct {
		table, cols string
		rows        [][]any
	}{{"tokens", tokenInsertCols, tokens}, {"refresh_tokens", refreshInsertCols, refreshes}} {
		if len(in.rows) == 0 {
			continue
		}
		if _, err := s.exec(ctx, tx, `INSERT INTO `+in.table+` (`+in.cols+`) VALUES `+values(10, len(in.rows)), slices.Concat(in.rows...)...); err != nil {
			return err
		}
	}
	return s.insertAudits(ctx, tx, events)
}
