package sqlstore

import (
	"context"
	"database/sql"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

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
