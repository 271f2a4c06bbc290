package sqlstore

import (
	"context"
	"errors"
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
		AND f.count >= {max} AND f.window_start > {since})`

// redeemSet is the columns redeemable's placeholders stand for, and what
// a redemption writes, as SET assignments.
const redeemSet = `code_hash = NULL, redeemed_at = {now}, engineer_sub = {sub}, engineer_iss = {iss},
	engineer_email = {email}, engineer_groups = {groups}, engineer_mfa = {mfa}, engineer_claims = {claims}`

// redeemOne is redemption's update with parameters, in the order of
// redeemArgs.
var redeemOne = `UPDATE grants SET ` + placeholders.Replace(redeemSet) + ` WHERE ` + placeholders.Replace(redeemable) +
	` RETURNING ` + strings.ReplaceAll(grantCols, "g.", "grants.") +
	`, (SELECT n.allow_non_admin_grants FROM tenants n WHERE n.id = grants.tenant_id)`

var placeholders = strings.NewReplacer("{tenant}", "?", "{code}", "?", "{now}", "?", "{engineer}", "?", "{max}", "?", "{since}", "?",
	"{sub}", "?", "{iss}", "?", "{email}", "?", "{groups}", "?", "{mfa}", "?", "{claims}", "?")

// redeemArgs are redeemOne's arguments for p.
func redeemArgs(p storage.RedeemParams) []any {
	r := newRedeemRow(p)
	return []any{r.now, r.sub, r.iss, r.email, r.groups, r.mfa, r.claims,
		r.tenant, r.code, r.now, r.now, r.engineer, r.max, r.since}
}

// redeemRow is what one redemption's statement is given.
type redeemRow struct {
	tenant, engineer, sub, iss, email, groups, claims string
	code                                              []byte
	now, since                                        int64
	max                                               int
	mfa                                               bool
}

func newRedeemRow(p storage.RedeemParams) redeemRow {
	claims := string(p.Engineer.Claims)
	if claims == "" {
		claims = "{}"
	}
	return redeemRow{
		tenant: p.TenantID, code: p.CodeHash, now: micro(p.Now), since: micro(p.Now.Add(-p.FailureWindow)), max: p.MaxFailures,
		engineer: engineerKey(p.Engineer), sub: p.Engineer.Sub, iss: p.Engineer.Iss, email: p.Engineer.Email,
		groups: jsonList(p.Engineer.Groups), mfa: p.Engineer.MFA, claims: claims,
	}
}

// engineerKey is the subject of an engineer's failure counter.
func engineerKey(e storage.Engineer) string { return e.Iss + " " + e.Sub } // issuer URLs hold no spaces

// redeemAllSQL updates every grant a batch's redemptions consume, in one
// statement: round trips to a database server, not the statements, are
// what a redemption costs on PostgreSQL. Its rows come as arrays, so the
// statement is the same for any batch.
var redeemAllSQL = `UPDATE grants SET ` + strings.NewReplacer("{", "v.", "}", "").Replace(redeemSet) + `
	FROM unnest(?::int[], ?::text[], ?::bytea[], ?::bigint[], ?::bigint[], ?::text[], ?::int[], ?::text[], ?::text[],
		?::text[], ?::text[], ?::boolean[], ?::text[])
		AS v(i, tenant, code, now, since, engineer, max, sub, iss, email, groups, mfa, claims)
	WHERE ` + strings.NewReplacer("{", "v.", "}", "").Replace(redeemable) + `
	RETURNING v.i, ` + strings.ReplaceAll(grantCols, "g.", "grants.") +
	`, (SELECT n.allow_non_admin_grants FROM tenants n WHERE n.id = grants.tenant_id)`

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
	if !s.f.bulk || len(idx) < 2 {
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
	n := len(idx)
	var (
		nums, maxes                   = make([]int, n), make([]int, n)
		nows, sinces                  = make([]int64, n), make([]int64, n)
		tenants, engineers, subs, iss = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		emails, groups, claims        = make([]string, n), make([]string, n), make([]string, n)
		codes                         = make([][]byte, n)
		mfas                          = make([]bool, n)
	)
	for k, i := range idx {
		r := newRedeemRow(jobs[i].redeem.p)
		nums[k], tenants[k], codes[k], nows[k], sinces[k], engineers[k], maxes[k] = i, r.tenant, r.code, r.now, r.since, r.engineer, r.max
		subs[k], iss[k], emails[k], groups[k], mfas[k], claims[k] = r.sub, r.iss, r.email, r.groups, r.mfa, r.claims
	}
	st, err := s.prepared(ctx, tx, redeemAllSQL)
	if err != nil {
		return false, err
	}
	rows, err := st.QueryContext(ctx, nums, tenants, codes, nows, sinces, engineers, maxes, subs, iss, emails, groups, mfas, claims)
	if err != nil {
		return false, s.mapErr(err)
	}
	got := map[int]storage.Grant{}
	allow := map[int]bool{}
	for rows.Next() {
		var i int
		var g storage.Grant
		var a bool
		dest, finish := grantDest(&g)
		if err := rows.Scan(append(append([]any{&i}, dest...), &a)...); err != nil {
			rows.Close()
			return false, s.mapErr(err)
		}
		if err := finish(); err != nil {
			rows.Close()
			return false, err
		}
		got[i], allow[i] = g, a
	}
	if err := rows.Err(); err != nil {
		return false, s.mapErr(err)
	}
	if len(got) < n {
		return false, nil // a failure to redeem: counted one by one
	}
	var issues []storage.Issue
	for _, i := range idx {
		g, p := got[i], jobs[i].redeem.p
		s.state(tx).granters[g.ID] = g.GranterClaims // for the grant.redeem notice
		is, err := jobs[i].redeem.issue(g, storage.Tenant{ID: p.TenantID, SupportEnabled: true, AllowNonAdminGrants: allow[i]})
		if err != nil {
			return false, nil // refused: made again alone, to be undone alone
		}
		issues = append(issues, is)
	}
	if ok, err := s.writeIssues(ctx, tx, issues); !ok {
		return false, err
	}
	for _, i := range idx {
		results[i] = batchResult{g: got[i]}
	}
	return true, nil
}

// writeIssues writes what several redemptions issued in one statement
// (PostgreSQL): the tokens and refresh tokens, as arrays, ride as
// data-modifying CTEs of the events' insert. Without events there is no
// statement to ride on: false, and they are written one by one.
func (s *Store) writeIssues(ctx context.Context, tx *sqlx.Tx, issues []storage.Issue) (bool, error) {
	var (
		jtis, tGrants, tClients, tAuds, tRoles, tScopes, tJKTs, tSIDs []string
		tIssued, tExpires                                             []int64
		hashes                                                        [][]byte
		rGrants, rClients, rAuds, rRoles, rScopes, rJKTs, rSIDs       []string
		rIssued, rExpires                                             []int64
		events                                                        []storage.AuditEvent
	)
	for _, is := range issues {
		if t := is.Token; t.JTI != "" {
			jtis, tGrants, tClients, tAuds = append(jtis, t.JTI), append(tGrants, t.GrantID), append(tClients, t.ClientID), append(tAuds, t.Audience)
			tRoles, tScopes, tJKTs, tSIDs = append(tRoles, t.Role), append(tScopes, t.Scope), append(tJKTs, t.JKT), append(tSIDs, t.SID)
			tIssued, tExpires = append(tIssued, micro(t.IssuedAt)), append(tExpires, micro(t.ExpiresAt))
		}
		if r := is.Refresh; r != nil {
			hashes, rGrants, rClients, rAuds = append(hashes, r.Hash), append(rGrants, r.GrantID), append(rClients, r.ClientID), append(rAuds, r.Audience)
			rRoles, rScopes, rJKTs, rSIDs = append(rRoles, r.Role), append(rScopes, r.Scope), append(rJKTs, r.JKT), append(rSIDs, r.SID)
			rIssued, rExpires = append(rIssued, micro(r.IssuedAt)), append(rExpires, micro(r.ExpiresAt))
		}
		events = append(events, is.Events...)
	}
	if len(events) == 0 {
		return false, nil
	}
	with := &cte{sql: `WITH t AS (INSERT INTO tokens (jti, grant_id, client_id, audience, role, scope, issued_at, expires_at, jkt, sid)
			SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::bigint[], ?::bigint[], ?::text[], ?::text[])),
		r AS (INSERT INTO refresh_tokens (hash, grant_id, client_id, audience, role, scope, issued_at, expires_at, jkt, sid)
			SELECT * FROM unnest(?::bytea[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::bigint[], ?::bigint[], ?::text[], ?::text[])) `,
		args: []any{jtis, tGrants, tClients, tAuds, tRoles, tScopes, tIssued, tExpires, tJKTs, tSIDs,
			hashes, rGrants, rClients, rAuds, rRoles, rScopes, rIssued, rExpires, rJKTs, rSIDs}}
	err := s.insertAuditsWith(ctx, tx, events, with)
	return err == nil, err
}
