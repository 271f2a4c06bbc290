package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

const refreshCols = `r.hash, r.grant_id, r.client_id, r.audience, r.role, r.scope, r.issued_at, r.expires_at, r.used_at, r.revoked_at, r.jkt, r.sid`

func scanRefresh(row scanner, r *storage.RefreshToken, more ...any) error {
	var issued, expires int64
	var used, revoked sql.NullInt64
	if err := row.Scan(append([]any{&r.Hash, &r.GrantID, &r.ClientID, &r.Audience, &r.Role, &r.Scope, &issued, &expires, &used, &revoked, &r.JKT, &r.SID}, more...)...); err != nil {
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
			if err := s.endReused(ctx, tx, `SELECT r.grant_id, g.tenant_id FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id
				WHERE r.hash = ? AND r.client_id = ? AND r.used_at IS NOT NULL`, []any{hash, clientID}, now, "refresh_token_reuse", reuse); err != nil {
				return err
			}
			reused = true
			return nil
		}
		if err != nil {
			return s.mapErr(err)
		}
		g, err = s.liveGrant(ctx, tx, r.GrantID, now)
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

const tokenCols = `t.jti, t.grant_id, t.client_id, t.audience, t.role, t.scope, t.issued_at, t.expires_at, t.revoked_at, t.first_used_at, t.jkt`

// versionedState is a token state as read at a state version.
type versionedState struct {
	v  int64
	st storage.TokenState
}

// TokenState reads a token with its grant and tenant toggle. Every call
// reads storage: first the state version, which each change that can end
// or narrow a live token increments in its own transaction (bumpState);
// when the version is the one a cached state was read at, nothing that
// state depends on has changed on any replica, and the state is answered
// without reading the three rows again. The version is read before the
// rows, so a change that commits in between only makes the next call read
// them again; concurrent calls share version reads, each one started after
// the call began (versionReads). The returned slices are shared: callers
// must not change them.
func (s *Store) TokenState(ctx context.Context, jti string) (storage.TokenState, error) {
	v, err := s.versions.get(ctx)
	if err != nil {
		return storage.TokenState{}, err
	}
	if c, ok := s.states.Get(jti); ok && c.v == v {
		return c.st, nil
	}
	st, err := s.scanTokenState(s.tokenState.QueryRowxContext(ctx, jti))
	if err == nil {
		s.states.Put(jti, versionedState{v: v, st: st})
	}
	return st, err
}

// bumpState increments the state version in tx: every cached token state
// is read again at the next introspection, on every replica.
func (s *Store) bumpState(ctx context.Context, tx *sqlx.Tx) error {
	_, err := s.exec(ctx, tx, `UPDATE state_version SET v = v + 1 WHERE id = 1`)
	return err
}

func (s *Store) scanTokenState(row scanner) (storage.TokenState, error) {
	var st storage.TokenState
	t := &st.Token
	var issued, expires int64
	var revoked, firstUsed sql.NullInt64
	gdest, finish := grantDest(&st.Grant)
	dest := append([]any{&t.JTI, &t.GrantID, &t.ClientID, &t.Audience, &t.Role, &t.Scope, &issued, &expires, &revoked, &firstUsed, &t.JKT}, gdest...)
	dest = append(dest, &st.TenantEnabled, &st.AllowNonAdminGrants)
	if err := row.Scan(dest...); err != nil {
		return storage.TokenState{}, s.mapErr(err)
	}
	t.IssuedAt, t.ExpiresAt, t.RevokedAt, t.FirstUsedAt = fromMicro(issued), fromMicro(expires), fromNull(revoked), fromNull(firstUsed)
	return st, finish()
}

// LiveTokens pages through tokens neither expired nor revoked at now, of
// grants still live, by jti after after.
func (s *Store) LiveTokens(ctx context.Context, now time.Time, after string, limit int) ([]storage.TokenState, error) {
	rows, err := s.read.QueryxContext(ctx, s.read.Rebind(`SELECT `+tokenCols+`, `+grantCols+`, n.support_enabled, n.allow_non_admin_grants
		FROM tokens t JOIN grants g ON g.id = t.grant_id JOIN tenants n ON n.id = g.tenant_id
		WHERE t.jti > ? AND t.revoked_at IS NULL AND t.expires_at > ? AND g.revoked_at IS NULL AND g.expires_at > ?
		ORDER BY t.jti LIMIT ?`), after, micro(now), micro(now), limit)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	var out []storage.TokenState
	for rows.Next() {
		st, err := s.scanTokenState(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, s.mapErr(rows.Err())
}

// SignalToken queues a signal about one token (kind session-revoked or
// token-claims-change) for the streams of its audience.
func (s *Store) SignalToken(ctx context.Context, jti, kind, reason string, claims map[string]any, at time.Time) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		g, err := s.tokenGrant(ctx, tx, jti)
		if err != nil {
			return err
		}
		if err := s.signal(ctx, tx, g, storage.Signal{Kind: kind, Time: at, Reason: reason, Initiator: "policy", Claims: claims}); err != nil {
			return err
		}
		if kind != storage.SignalSessionRevoked || len(s.logoutClients) == 0 {
			return nil
		}
		// The policy now refuses the token: its client signs the session out.
		var client, sid string
		if err := s.queryRow(ctx, tx, `SELECT client_id, sid FROM tokens WHERE jti = ?`, jti).Scan(&client, &sid); err != nil {
			return s.mapErr(err)
		}
		return s.queueLogout(ctx, tx, storage.Logout{ClientID: client, Sub: g.Sub, SID: sid, Tenant: g.Tenant, GrantID: g.ID, Time: at, Reason: reason})
	})
}

// MarkTokenUsed records a token's first active introspection.
//
// It is group-committed with the tenant's redemptions: a product
// introspects a token as soon as it is issued, so first uses come as fast
// as exchanges, and each in a transaction of its own held the one SQLite
// writer for an fsync (a burst of 256 fresh tokens on PostgreSQL, each
// waiting for the tenant's chain head, kept introspections waiting up to
// 480 ms).
func (s *Store) MarkTokenUsed(ctx context.Context, jti string, at time.Time, ev storage.AuditEvent) (bool, error) {
	var n int64
	_, err := s.inBatch(ctx, ev.TenantID, s.undoneOnError(func(ctx context.Context, tx *sqlx.Tx) error {
		var err error
		n, err = s.exec(ctx, tx, `UPDATE tokens SET first_used_at = ? WHERE jti = ? AND first_used_at IS NULL`, micro(at), jti)
		if err == nil && n > 0 {
			err = s.insertAudit(ctx, tx, ev)
		}
		return err
	}))
	// The cached state still says never used: read it again next time,
	// once, rather than try to record the first use on every call.
	s.states.Delete(jti)
	return err == nil && n > 0, err
}

// RevokeToken revokes one access token.
func (s *Store) RevokeToken(ctx context.Context, jti string, at time.Time, ev storage.AuditEvent) (bool, error) {
	var changed bool
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `UPDATE tokens SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL`, micro(at), jti)
		if err == nil && n > 0 {
			err = s.bumpState(ctx, tx)
		}
		if err != nil {
			return err
		}
		changed = n > 0
		if !changed {
			return nil
		}
		g, err := s.tokenGrant(ctx, tx, jti)
		if err != nil {
			return err
		}
		if err := s.signalEnds(ctx, tx, []endedGrant{g}, at, "token_revoked", initiator(&ev, "token_revoked")); err != nil {
			return err
		}
		return s.insertAudit(ctx, tx, ev)
	})
	return changed, err
}

// UseProof records a DPoP proof once; see storage.Store. One statement: a
// row still in force makes the upsert change nothing.
func (s *Store) UseProof(ctx context.Context, id []byte, now, expires time.Time) error {
	var n int64
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		var err error
		n, err = s.exec(ctx, tx, `INSERT INTO dpop_proofs (id, expires_at) VALUES (?, ?)
			ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at WHERE dpop_proofs.expires_at <= ?`,
			id, micro(expires), micro(now))
		return err
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return storage.ErrAlreadyExists
	}
	return nil
}

// PruneProofs deletes expired proof records, a bounded batch per call.
func (s *Store) PruneProofs(ctx context.Context, now time.Time, limit int) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		var err error
		n, err = s.exec(ctx, tx, `DELETE FROM dpop_proofs WHERE id IN
			(SELECT id FROM dpop_proofs WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)`, micro(now), limit)
		return err
	})
	return int(n), err
}

// tokenGrant is the subject of one token's signals: its grant and audience.
func (s *Store) tokenGrant(ctx context.Context, tx *sqlx.Tx, jti string) (endedGrant, error) {
	g := endedGrant{TokenJTI: jti}
	err := s.queryRow(ctx, tx, `SELECT g.id, g.tenant_id, g.granted_by, g.granted_by_iss, g.engineer_sub, g.engineer_iss, t.audience
		FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE t.jti = ?`, jti).Scan(
		&g.ID, &g.Tenant, &g.Sub, &g.SubIss, &g.Act, &g.ActIss, &g.TokenAudnce)
	return g, s.mapErr(err)
}

// endReused ends the grant that q (returning grant_id, tenant_id) finds
// for a credential presented again after use; ErrNotFound if none.
func (s *Store) endReused(ctx context.Context, tx *sqlx.Tx, q string, args []any, now time.Time, reason string, ev storage.AuditEvent) error {
	var grantID, tenantID string
	err := s.queryRow(ctx, tx, q, args...).Scan(&grantID, &tenantID)
	if errors.Is(err, sql.ErrNoRows) {
		return storage.ErrNotFound
	}
	if err != nil {
		return s.mapErr(err)
	}
	_, err = s.endGrants(ctx, tx, tenantID, `id = ?`, []any{grantID}, now, "system", reason, &ev)
	return err
}

// liveGrant reads a grant that is neither ended nor expired, of a tenant
// with support on.
func (s *Store) liveGrant(ctx context.Context, tx *sqlx.Tx, id string, now time.Time) (storage.Grant, error) {
	return s.scanGrant(s.queryRow(ctx, tx, `SELECT `+grantCols+` FROM grants g JOIN tenants n ON n.id = g.tenant_id
		WHERE g.id = ? AND g.revoked_at IS NULL AND g.expires_at > ? AND n.support_enabled`, id, micro(now)))
}
