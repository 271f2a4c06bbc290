package sqlstore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

type headJSON struct {
	Tenant string `json:"tenant"`
	Seq    int64  `json:"seq"`
	Hash   string `json:"hash"`
}

// writeCheckpoint appends a checkpoint of all heads (and anchors) in tx.
func (s *Store) writeCheckpoint(ctx context.Context, tx *sqlx.Tx, now time.Time, anchors []headJSON, sign storage.Signer) error {
	if err := s.flushHeads(ctx, tx); err != nil {
		return err
	}
	var heads []headJSON
	rows, err := tx.QueryxContext(ctx, `SELECT tenant_id, seq, hash FROM audit_heads ORDER BY tenant_id`)
	if err != nil {
		return s.mapErr(err)
	}
	for rows.Next() {
		var h headJSON
		var hash []byte
		if err := rows.Scan(&h.Tenant, &h.Seq, &hash); err != nil {
			rows.Close()
			return s.mapErr(err)
		}
		h.Hash = hex.EncodeToString(hash)
		heads = append(heads, h)
	}
	rows.Close()
	if anchors == nil {
		anchors = []headJSON{}
	}
	body, _ := json.Marshal(map[string]any{"heads": heads, "anchors": anchors})
	prev := storage.GenesisHash
	err = s.queryRow(ctx, tx, `SELECT hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1`).Scan(&prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return s.mapErr(err)
	}
	now = time.UnixMicro(now.UnixMicro()).UTC()
	hash := storage.CheckpointHash(s.auditKey, now, body, prev)
	sig := ""
	if sign != nil {
		if sig, err = sign(storage.CheckpointPayload(hash)); err != nil {
			return fmt.Errorf("signing checkpoint: %w", err)
		}
	}
	_, err = s.exec(ctx, tx, `INSERT INTO audit_checkpoints (at, body, prev_hash, hash, signature) VALUES (?, ?, ?, ?, ?)`,
		micro(now), string(body), prev, hash, sig)
	return err
}

// Checkpoint seals the current heads.
func (s *Store) Checkpoint(ctx context.Context, now time.Time, sign storage.Signer) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error { return s.writeCheckpoint(ctx, tx, now, nil, sign) })
}

// PublicKeys returns every stored key's public JWK, retired ones included.
func (s *Store) PublicKeys(ctx context.Context) (map[string][]byte, error) {
	rows, err := s.read.QueryxContext(ctx, `SELECT id, public_jwk FROM signing_keys`)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var id, jwk string
		if err := rows.Scan(&id, &jwk); err != nil {
			return nil, s.mapErr(err)
		}
		out[id] = []byte(jwk)
	}
	return out, s.mapErr(rows.Err())
}

// AuditCheckpoints returns the checkpoint chain and the prune anchors.
func (s *Store) AuditCheckpoints(ctx context.Context) ([]storage.Checkpoint, []storage.AuditHead, error) {
	var cps []storage.Checkpoint
	rows, err := s.read.QueryxContext(ctx, `SELECT id, at, body, prev_hash, hash, signature FROM audit_checkpoints ORDER BY id`)
	if err != nil {
		return nil, nil, s.mapErr(err)
	}
	for rows.Next() {
		var c storage.Checkpoint
		var at int64
		var body string
		if err := rows.Scan(&c.ID, &at, &body, &c.PrevHash, &c.Hash, &c.Signature); err != nil {
			rows.Close()
			return nil, nil, s.mapErr(err)
		}
		c.At, c.Body = fromMicro(at), []byte(body)
		cps = append(cps, c)
	}
	rows.Close()
	var anchors []storage.AuditHead
	rows, err = s.read.QueryxContext(ctx, `SELECT tenant_id, seq, hash FROM audit_anchors ORDER BY tenant_id`)
	if err != nil {
		return nil, nil, s.mapErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var a storage.AuditHead
		if err := rows.Scan(&a.TenantID, &a.Seq, &a.Hash); err != nil {
			return nil, nil, s.mapErr(err)
		}
		anchors = append(anchors, a)
	}
	return cps, anchors, s.mapErr(rows.Err())
}

// Prune applies retention in bounded batches, each its own short
// transaction, so that no request waits long behind it. The audit cut is
// sealed (checkpoint and anchors) before any event goes; events at or
// below an anchor that a crash left behind are outside every chain the
// verifier walks, and the next run deletes them.
func (s *Store) Prune(ctx context.Context, p storage.PruneParams) (storage.PruneResult, error) {
	var r storage.PruneResult
	var err error
	if !p.AuditBefore.IsZero() {
		if r.AuditEvents, err = s.pruneAudit(ctx, p); err != nil {
			return r, err
		}
	}
	if !p.EngineersBefore.IsZero() {
		if r.Engineers, err = s.pruneEngineers(ctx, micro(p.EngineersBefore)); err != nil {
			return r, err
		}
	}
	if !p.ArchiveBefore.IsZero() {
		if r.Archived, err = s.archiveGrants(ctx, micro(p.ArchiveBefore), micro(p.Now)); err != nil {
			return r, err
		}
	}
	return r, nil
}

// pruneAudit seals each tenant's cut, then deletes up to it in batches.
func (s *Store) pruneAudit(ctx context.Context, p storage.PruneParams) (int, error) {
	var cut []struct {
		Tenant string `db:"tenant_id"`
		Seq    int64  `db:"seq"`
	}
	if err := s.read.SelectContext(ctx, &cut, s.read.Rebind(`SELECT tenant_id, MAX(seq) AS seq FROM audit_events
		WHERE at < ? AND seq IS NOT NULL GROUP BY tenant_id ORDER BY tenant_id`), micro(p.AuditBefore)); err != nil {
		return 0, s.mapErr(err)
	}
	var anchors []headJSON
	for _, c := range cut {
		var hash []byte
		if err := s.read.QueryRowxContext(ctx, s.read.Rebind(`SELECT hash FROM audit_events WHERE tenant_id = ? AND seq = ?`), c.Tenant, c.Seq).Scan(&hash); err != nil {
			return 0, s.mapErr(err)
		}
		anchors = append(anchors, headJSON{Tenant: c.Tenant, Seq: c.Seq, Hash: hex.EncodeToString(hash)})
	}
	if len(anchors) == 0 {
		return 0, nil
	}
	// Seal the anchors first: the chain stays verifiable from them.
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		if err := s.writeCheckpoint(ctx, tx, p.Now, anchors, p.Sign); err != nil {
			return err
		}
		for _, a := range anchors {
			hash, _ := hex.DecodeString(a.Hash)
			if _, err := s.exec(ctx, tx, `INSERT INTO audit_anchors (tenant_id, seq, hash) VALUES (?, ?, ?)
				ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`, a.Tenant, a.Seq, hash); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	total := 0
	for _, a := range anchors {
		n, err := s.batched(ctx, `DELETE FROM audit_events WHERE id IN
			(SELECT id FROM audit_events WHERE tenant_id = ? AND seq <= ? LIMIT ?)`, a.Tenant, a.Seq)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// pruneEngineers removes engineer details of grants ended before cut and
// stale engineer failure counters.
func (s *Store) pruneEngineers(ctx context.Context, cut int64) (int, error) {
	// Candidates are found on the readers, by the expiry and revocation
	// indexes; each batch is then cleared in a short transaction that
	// checks the condition again. The writer never waits on a scan.
	const cond = `(engineer_email <> '' OR engineer_claims <> '{}') AND redeemed_at < ?
		AND (expires_at < ? OR (revoked_at IS NOT NULL AND revoked_at < ?))`
	n := 0
	for {
		var ids []string
		if err := s.read.SelectContext(ctx, &ids, s.read.Rebind(`SELECT id FROM grants WHERE `+cond+` LIMIT ?`),
			cut, cut, cut, s.pruneBatch); err != nil {
			return n, s.mapErr(err)
		}
		if len(ids) == 0 {
			break
		}
		q, args, err := sqlx.In(`UPDATE grants SET engineer_email = '', engineer_claims = '{}', engineer_groups = '[]'
			WHERE id IN (?) AND `+cond, ids, cut, cut, cut)
		if err != nil {
			return n, err
		}
		err = s.tx(ctx, func(tx *sqlx.Tx) error {
			c, err := s.exec(ctx, tx, q, args...)
			n += int(c)
			return err
		})
		if err != nil || len(ids) < s.pruneBatch {
			if err != nil {
				return n, err
			}
			break
		}
	}
	m, err := s.batched(ctx, `DELETE FROM redeem_failures WHERE scope = ? AND subject IN
		(SELECT subject FROM redeem_failures WHERE scope = ? AND window_start < ? LIMIT ?)`, scopeEngineer, scopeEngineer, cut)
	return n + m, err
}

// archiveGrants moves grants ended before cut to the archive and deletes
// their tokens, a batch per transaction.
func (s *Store) archiveGrants(ctx context.Context, cut, now int64) (int, error) {
	const ended = `(expires_at < ? OR (revoked_at IS NOT NULL AND revoked_at < ?))`
	total := 0
	for {
		var ids []string
		if err := s.read.SelectContext(ctx, &ids, s.read.Rebind(`SELECT id FROM grants WHERE `+ended+` ORDER BY id LIMIT ?`), cut, cut, s.pruneBatch); err != nil {
			return total, s.mapErr(err)
		}
		if len(ids) == 0 {
			return total, nil
		}
		in := `(` + marks(len(ids)) + `)`
		args := make([]any, len(ids))
		for i, id := range ids {
			args[i] = id
		}
		err := s.tx(ctx, func(tx *sqlx.Tx) error {
			if _, err := s.exec(ctx, tx, `INSERT INTO grants_archive (id, tenant_id, role, environments, resources, ticket, granted_by,
				created_at, expires_at, redeemed_at, engineer_sub, engineer_iss, revoked_at, revoke_reason, archived_at)
				SELECT id, tenant_id, role, environments, resources, ticket, granted_by, created_at, expires_at, redeemed_at,
					engineer_sub, engineer_iss, revoked_at, revoke_reason, ? FROM grants WHERE id IN `+in+` AND `+ended+`
				ON CONFLICT (id) DO NOTHING`, append(append([]any{now}, args...), cut, cut)...); err != nil {
				return err
			}
			for _, table := range []string{"tokens", "refresh_tokens", "grant_approvals"} {
				if _, err := s.exec(ctx, tx, `DELETE FROM `+table+` WHERE grant_id IN `+in, args...); err != nil {
					return err
				}
			}
			n, err := s.exec(ctx, tx, `DELETE FROM grants WHERE id IN `+in+` AND `+ended, append(args, cut, cut)...)
			total += int(n)
			return err
		})
		if err != nil {
			return total, err
		}
		if len(ids) < s.pruneBatch {
			return total, nil
		}
	}
}

// batched runs q (whose last parameter is the batch size) in its own short
// transactions until a run changes fewer than a batch of rows. The writer
// is never held for long, whatever the size of the database.
func (s *Store) batched(ctx context.Context, q string, args ...any) (int, error) {
	total := 0
	for {
		var n int64
		err := s.tx(ctx, func(tx *sqlx.Tx) error {
			var err error
			n, err = s.exec(ctx, tx, q, append(args, s.pruneBatch)...)
			return err
		})
		total += int(n)
		if err != nil || n < int64(s.pruneBatch) {
			return total, err
		}
	}
}
