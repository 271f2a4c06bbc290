package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

// SetLogoutClients names the clients that take OIDC Back-Channel Logout:
// a grant's or session's end queues a logout token for each of them that
// holds its tokens, and for no other client.
func (s *Store) SetLogoutClients(ids []string) {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	s.logoutClients = m
}

const sessionCols = `id, secret_hash, kind, subject, issuer, email, claims, amr, acr, auth_time, created_at, last_seen_at, expires_at, ended_at`

func scanSession(row scanner, ss *storage.Session) error {
	var claims, amr string
	var auth, created, seen, expires int64
	var ended sql.NullInt64
	if err := row.Scan(&ss.ID, &ss.SecretHash, &ss.Kind, &ss.Subject, &ss.Issuer, &ss.Email, &claims, &amr, &ss.ACR,
		&auth, &created, &seen, &expires, &ended); err != nil {
		return err
	}
	ss.Claims = []byte(claims)
	ss.AuthTime, ss.CreatedAt, ss.LastSeenAt, ss.ExpiresAt, ss.EndedAt = fromMicro(auth), fromMicro(created), fromMicro(seen), fromMicro(expires), fromNull(ended)
	var err error
	ss.AMR, err = parseList(amr)
	return err
}

// CreateSession stores a new session.
func (s *Store) CreateSession(ctx context.Context, ss storage.Session) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		_, err := s.exec(ctx, tx, `INSERT INTO sessions (`+sessionCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)`,
			ss.ID, ss.SecretHash, ss.Kind, ss.Subject, ss.Issuer, ss.Email, string(ss.Claims), jsonList(ss.AMR), ss.ACR,
			micro(ss.AuthTime), micro(ss.CreatedAt), micro(ss.LastSeenAt), micro(ss.ExpiresAt))
		return err
	})
}

// SessionBySecret returns a live session; see storage.OPStore.
func (s *Store) SessionBySecret(ctx context.Context, kind string, hash []byte, now, idleSince time.Time) (storage.Session, error) {
	var ss storage.Session
	err := scanSession(s.read.QueryRowxContext(ctx, s.read.Rebind(`SELECT `+sessionCols+` FROM sessions
		WHERE secret_hash = ? AND kind = ? AND ended_at IS NULL AND expires_at > ? AND last_seen_at > ?`), hash, kind, micro(now), micro(idleSince)), &ss)
	if err != nil {
		return ss, s.mapErr(err)
	}
	if now.Sub(ss.LastSeenAt) > time.Minute {
		// The idle clock is kept to the minute: a write per page view
		// would put every click behind the single writer.
		err := s.tx(ctx, func(tx *sqlx.Tx) error {
			_, err := s.exec(ctx, tx, `UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?`, micro(now), ss.ID, micro(now))
			return err
		})
		if err != nil {
			return ss, err
		}
		ss.LastSeenAt = now
	}
	return ss, nil
}

// EndSession ends a session and what was issued in it; see storage.OPStore.
func (s *Store) EndSession(ctx context.Context, id string, at time.Time, reason string, ev storage.AuditEvent) (bool, error) {
	ended := false
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `UPDATE sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL`, micro(at), id)
		if err != nil {
			return err
		}
		if ended = n > 0; !ended {
			return nil
		}
		if err := s.bumpState(ctx, tx); err != nil {
			return err
		}
		var held []struct {
			GrantID  string `db:"grant_id"`
			TenantID string `db:"tenant_id"`
			Sub      string `db:"granted_by"`
			ClientID string `db:"client_id"`
		}
		if err := tx.SelectContext(ctx, &held, tx.Rebind(`SELECT DISTINCT t.grant_id, g.tenant_id, g.granted_by, t.client_id
			FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE t.sid = ? ORDER BY t.grant_id, t.client_id`), id); err != nil {
			return s.mapErr(err)
		}
		for _, table := range []string{"tokens", "refresh_tokens"} {
			if _, err := s.exec(ctx, tx, `UPDATE `+table+` SET revoked_at = ? WHERE sid = ? AND revoked_at IS NULL`, micro(at), id); err != nil {
				return err
			}
		}
		lastGrant := ""
		for _, h := range held {
			if h.GrantID != lastGrant {
				e := ev
				e.TenantID, e.Target = h.TenantID, h.GrantID
				e.Detail = mergeDetail(e.Detail, map[string]any{"sid": id, "sub": h.Sub, "reason": reason})
				if err := s.insertAudit(ctx, tx, e); err != nil {
					return err
				}
				lastGrant = h.GrantID
			}
			if err := s.queueLogout(ctx, tx, storage.Logout{ClientID: h.ClientID, Sub: h.Sub, SID: id, Tenant: h.TenantID,
				GrantID: h.GrantID, Time: at, Reason: reason}); err != nil {
				return err
			}
		}
		return nil
	})
	return ended, err
}

// ExpiredSessions lists sessions past their absolute limit, not yet ended.
func (s *Store) ExpiredSessions(ctx context.Context, now time.Time, limit int) ([]string, error) {
	var ids []string
	err := s.read.SelectContext(ctx, &ids, s.read.Rebind(`SELECT id FROM sessions WHERE ended_at IS NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?`), micro(now), limit)
	return ids, s.mapErr(err)
}

// logoutEnds queues a logout token for each client that takes
// back-channel logout and holds tokens of an ended grant: one per session
// the tokens were issued in, and one without sid for token exchange.
func (s *Store) logoutEnds(ctx context.Context, tx *sqlx.Tx, ended []endedGrant, at time.Time, reason string) error {
	if len(s.logoutClients) == 0 {
		return nil
	}
	for _, g := range ended {
		var held []struct {
			ClientID string `db:"client_id"`
			SID      string `db:"sid"`
		}
		if err := tx.SelectContext(ctx, &held, tx.Rebind(`SELECT DISTINCT client_id, sid FROM tokens WHERE grant_id = ? ORDER BY client_id, sid`), g.ID); err != nil {
			return s.mapErr(err)
		}
		for _, h := range held {
			if err := s.queueLogout(ctx, tx, storage.Logout{ClientID: h.ClientID, Sub: g.Sub, SID: h.SID, Tenant: g.Tenant,
				GrantID: g.ID, Time: at, Reason: reason}); err != nil {
				return err
			}
		}
	}
	return nil
}

// queueLogout puts one logout token in the outbox, if the client takes
// back-channel logout.
func (s *Store) queueLogout(ctx context.Context, tx *sqlx.Tx, l storage.Logout) error {
	if !s.logoutClients[l.ClientID] {
		return nil
	}
	l.JTI = newJTI()
	payload, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if _, err := s.exec(ctx, tx, `INSERT INTO outbox (tenant_id, kind, channel, destination, payload, next_attempt_at, created_at)
		VALUES (?, 'backchannel_logout', 'logout', ?, ?, ?, ?)`, l.Tenant, l.ClientID, string(payload), micro(l.Time), micro(l.Time)); err != nil {
		return err
	}
	s.queued(tx)
	return nil
}

const authRequestCols = `id, browser_hash, upstream, client_id, redirect_uri, scope, state, nonce, code_challenge, prompt, max_age,
	upstream_nonce, upstream_verifier, session_id, created_at, expires_at`

// PutAuthRequest stores an authorization request.
func (s *Store) PutAuthRequest(ctx context.Context, a storage.AuthRequest) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		_, err := s.exec(ctx, tx, `INSERT INTO auth_requests (`+authRequestCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.ID, a.BrowserHash, a.Upstream, a.ClientID, a.RedirectURI, a.Scope, a.State, a.Nonce, a.CodeChallenge, a.Prompt, a.MaxAge,
			a.UpstreamNonce, a.UpstreamVerifier, a.SessionID, micro(a.CreatedAt), micro(a.ExpiresAt))
		return err
	})
}

// AuthRequest returns a live authorization request.
func (s *Store) AuthRequest(ctx context.Context, id string, now time.Time) (storage.AuthRequest, error) {
	var a storage.AuthRequest
	var created, expires int64
	err := s.read.QueryRowxContext(ctx, s.read.Rebind(`SELECT `+authRequestCols+` FROM auth_requests WHERE id = ? AND expires_at > ?`), id, micro(now)).
		Scan(&a.ID, &a.BrowserHash, &a.Upstream, &a.ClientID, &a.RedirectURI, &a.Scope, &a.State, &a.Nonce, &a.CodeChallenge, &a.Prompt, &a.MaxAge,
			&a.UpstreamNonce, &a.UpstreamVerifier, &a.SessionID, &created, &expires)
	a.CreatedAt, a.ExpiresAt = fromMicro(created), fromMicro(expires)
	return a, s.mapErr(err)
}

// SetAuthRequestSession records the session a request's sign-in made.
func (s *Store) SetAuthRequestSession(ctx context.Context, id, sessionID string) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `UPDATE auth_requests SET session_id = ? WHERE id = ?`, sessionID, id)
		if err == nil && n == 0 {
			err = storage.ErrNotFound
		}
		return err
	})
}

const authCodeCols = `hash, client_id, redirect_uri, code_challenge, nonce, session_id, grant_id, tenant_id, scope, auth_time, amr, acr, created_at, expires_at, used_at`

// CreateAuthCode stores a code and deletes the request it answers.
func (s *Store) CreateAuthCode(ctx context.Context, c storage.AuthCode, requestID string) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `DELETE FROM auth_requests WHERE id = ?`, requestID)
		if err != nil {
			return err
		}
		if n == 0 {
			return storage.ErrNotFound // answered already, in another tab
		}
		_, err = s.exec(ctx, tx, `INSERT INTO auth_codes (`+authCodeCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)`,
			c.Hash, c.ClientID, c.RedirectURI, c.CodeChallenge, c.Nonce, c.SessionID, c.GrantID, c.TenantID, c.Scope,
			micro(c.AuthTime), jsonList(c.AMR), c.ACR, micro(c.CreatedAt), micro(c.ExpiresAt))
		return err
	})
}

// ExchangeAuthCode consumes a code once; see storage.OPStore.
func (s *Store) ExchangeAuthCode(ctx context.Context, hash []byte, bind storage.AuthCode, now time.Time, reuse storage.AuditEvent, issue func(storage.Grant, storage.AuthCode) (storage.Issue, error)) (storage.Grant, storage.AuthCode, error) {
	var g storage.Grant
	var c storage.AuthCode
	reused := false
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		reused = false
		var amr string
		var auth, created, expires int64
		var used sql.NullInt64
		// Single use is this one statement (never check-then-consume).
		err := s.queryRow(ctx, tx, `UPDATE auth_codes SET used_at = ? WHERE hash = ? AND used_at IS NULL AND expires_at > ?
			AND client_id = ? AND redirect_uri = ? AND code_challenge = ?
			RETURNING `+authCodeCols, micro(now), hash, micro(now), bind.ClientID, bind.RedirectURI, bind.CodeChallenge).
			Scan(&c.Hash, &c.ClientID, &c.RedirectURI, &c.CodeChallenge, &c.Nonce, &c.SessionID, &c.GrantID, &c.TenantID, &c.Scope,
				&auth, &amr, &c.ACR, &created, &expires, &used)
		if errors.Is(err, sql.ErrNoRows) {
			// A live code presented by another client, for another
			// redirect_uri or with a wrong verifier is burnt: whoever holds
			// it is not the client it was issued to (RFC 7636 §4.6).
			var live int
			if err := s.queryRow(ctx, tx, `SELECT COUNT(*) FROM auth_codes WHERE hash = ? AND used_at IS NULL`, hash).Scan(&live); err != nil {
				return s.mapErr(err)
			}
			if live > 0 {
				return errBurnt
			}
			if err := s.endReused(ctx, tx, `SELECT grant_id, tenant_id FROM auth_codes WHERE hash = ? AND used_at IS NOT NULL AND NOT burnt`,
				[]any{hash}, now, "authorization_code_reuse", reuse); err != nil {
				return err
			}
			reused = true
			return nil
		}
		if err != nil {
			return s.mapErr(err)
		}
		c.AuthTime, c.CreatedAt, c.ExpiresAt, c.UsedAt = fromMicro(auth), fromMicro(created), fromMicro(expires), now
		if c.AMR, err = parseList(amr); err != nil {
			return err
		}
		g, err = s.liveGrant(ctx, tx, c.GrantID, now)
		if err != nil {
			return err
		}
		is, err := issue(g, c)
		if err != nil {
			return err
		}
		return s.writeIssue(ctx, tx, is)
	})
	if errors.Is(err, errBurnt) {
		err = s.tx(ctx, func(tx *sqlx.Tx) error {
			// Burnt, it issued nothing: presenting it again is refused and
			// ends nothing (RFC 6749 §4.1.2 revokes what a code issued).
			_, err := s.exec(ctx, tx, `UPDATE auth_codes SET used_at = ?, burnt = TRUE WHERE hash = ? AND used_at IS NULL`, micro(now), hash)
			return err
		})
		if err == nil {
			err = storage.ErrNotFound
		}
	}
	if err != nil {
		return storage.Grant{}, storage.AuthCode{}, err
	}
	if reused {
		return storage.Grant{}, storage.AuthCode{}, storage.ErrNotFound
	}
	return g, c, nil
}

// errBurnt rolls back the exchange's transaction of a mismatched code, which
// is then burnt in a transaction of its own.
var errBurnt = errors.New("authorization code presented with the wrong binding")

// GrantsLastUse returns the latest first use of each grant's tokens.
func (s *Store) GrantsLastUse(ctx context.Context, tenantID string, ids []string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	if len(ids) == 0 {
		return out, nil
	}
	q, args, err := sqlx.In(`SELECT t.grant_id, MAX(t.first_used_at) FROM tokens t JOIN grants g ON g.id = t.grant_id
		WHERE g.tenant_id = ? AND t.grant_id IN (?) AND t.first_used_at IS NOT NULL GROUP BY t.grant_id`, tenantID, ids)
	if err != nil {
		return nil, err
	}
	rows, err := s.read.QueryContext(ctx, s.read.Rebind(q), args...)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var at int64
		if err := rows.Scan(&id, &at); err != nil {
			return nil, s.mapErr(err)
		}
		out[id] = fromMicro(at)
	}
	return out, s.mapErr(rows.Err())
}

// AuditAfter returns events with an id above afterID, oldest first.
func (s *Store) AuditAfter(ctx context.Context, afterID int64, limit int) ([]storage.AuditEvent, error) {
	return s.queryAudit(ctx, `SELECT `+auditCols+` FROM audit_events WHERE id > ? ORDER BY id LIMIT ?`, afterID, limit)
}

// LastAuditID is the highest audit event id.
func (s *Store) LastAuditID(ctx context.Context) (int64, error) {
	var id int64
	err := s.read.QueryRowxContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM audit_events`).Scan(&id)
	return id, s.mapErr(err)
}

// EngineerGrants lists the live grants an engineer redeemed, newest first.
func (s *Store) EngineerGrants(ctx context.Context, sub, iss string, now time.Time) ([]storage.Grant, error) {
	return s.queryGrants(ctx, `SELECT `+grantCols+` FROM grants g JOIN tenants n ON n.id = g.tenant_id
		WHERE g.engineer_sub = ? AND g.engineer_iss = ? AND g.revoked_at IS NULL AND g.redeemed_at IS NOT NULL
		AND g.expires_at > ? AND n.support_enabled ORDER BY g.redeemed_at DESC, g.id LIMIT 50`, sub, iss, micro(now))
}

// PruneOP deletes expired authorization requests, codes and sessions.
func (s *Store) PruneOP(ctx context.Context, now time.Time, limit int) (int, error) {
	total := 0
	for _, q := range []struct {
		sql    string
		before time.Time
	}{
		{`DELETE FROM auth_requests WHERE id IN (SELECT id FROM auth_requests WHERE expires_at < ? LIMIT ?)`, now},
		// A code is kept for a day after it expires, so that a late
		// replay is still seen as a reuse and ends the grant.
		{`DELETE FROM auth_codes WHERE hash IN (SELECT hash FROM auth_codes WHERE expires_at < ? LIMIT ?)`, now.Add(-24 * time.Hour)},
		// A session is deleted only once ended (so its end was announced),
		// a day after its limit.
		{`DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE ended_at IS NOT NULL AND expires_at < ? LIMIT ?)`, now.Add(-24 * time.Hour)},
	} {
		err := s.tx(ctx, func(tx *sqlx.Tx) error {
			n, err := s.exec(ctx, tx, q.sql, micro(q.before), limit)
			total += int(n)
			return err
		})
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
