package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/actas/actas/claims"
	"github.com/actas/actas/storage"
)

// loadKeySet reads the stored keys and builds the key set: the current key
// signs, every published key (next, current, previous within its window)
// verifies. It creates a current and a next key of alg when missing; a
// replica that loses the race to create one reads the winner's.
func (s *Server) loadKeySet(ctx context.Context, alg string) (*claims.KeySet, error) {
	for attempt := 0; attempt < 3; attempt++ {
		stored, err := s.store.SigningKeys(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading signing keys: %w", err)
		}
		var signing *claims.Key
		var published []*claims.Key
		hasNext := false
		for _, sk := range stored {
			if sk.State == storage.KeyNext {
				hasNext = true
			}
			if sk.State == storage.KeyCurrent {
				s.currentKey.Store(&sk)
			}
			k, err := s.openKey(sk)
			if err != nil {
				return nil, err
			}
			if sk.State == storage.KeyCurrent {
				signing = k
			}
			if sk.State == storage.KeyPrevious && !sk.RetireAt.IsZero() && !s.now().Before(sk.RetireAt) {
				continue // past its publication window
			}
			published = append(published, k)
		}
		if signing != nil && hasNext {
			return claims.NewKeySet(signing, published)
		}
		state := storage.KeyCurrent
		if signing != nil {
			state = storage.KeyNext
		}
		if err := s.createKey(ctx, alg, state); err != nil && !errors.Is(err, storage.ErrAlreadyExists) {
			return nil, err
		}
	}
	return nil, errors.New("signing keys still missing after creating them")
}

// minNextAge is how long a next key must have been published before it may
// sign: longer than replicas take to re-read keys and relying parties to
// refresh a cached JWKS (max-age 60s).
const minNextAge = 2 * time.Minute

// ErrNextTooNew refuses a rotation whose next key relying parties may not
// have seen yet.
var ErrNextTooNew = errors.New("the next key was published too recently")

// RotateKeys makes the published next key current, keeps the outgoing key
// published until every token it signed has expired (plus the time replicas
// take to notice and clock skew), and publishes a fresh next key. Another
// replica rotating at the same moment makes this a no-op (ErrConflict).
func (s *Server) RotateKeys(ctx context.Context, force bool) error {
	stored, err := s.store.SigningKeys(ctx)
	if err != nil {
		return err
	}
	var cur, next *storage.SigningKey
	for i := range stored {
		switch stored[i].State {
		case storage.KeyCurrent:
			cur = &stored[i]
		case storage.KeyNext:
			next = &stored[i]
		}
	}
	now := s.now()
	if cur == nil || next == nil {
		return fmt.Errorf("%w: no current or next key; start actas once first", storage.ErrConflict)
	}
	if age := now.Sub(next.CreatedAt); age < minNextAge && !force {
		return fmt.Errorf("%w: published %s ago, wait until it has been %s (or force)", ErrNextTooNew, age.Round(time.Second), minNextAge)
	}
	k, sk, err := s.newSealedKey(s.cfg.Keys.Algorithm, storage.KeyNext)
	if err != nil {
		return err
	}
	retire := now.Add(s.policy.Load().AccessTTL + keyRefreshInterval + s.skew)
	ev := s.event(ctx, actor{Type: storage.ActorSystem, ID: "actas"}, "", "key.rotate", next.ID, "success", map[string]any{
		"previous": cur.ID, "current": next.ID, "next": k.ID, "previous_retire_at": retire.UTC().Format(time.RFC3339)})
	if err := s.store.RotateKeys(ctx, storage.RotateParams{ExpectCurrent: cur.ID, Now: now, RetireAt: retire, NewNext: sk, Event: ev}); err != nil {
		return err
	}
	s.log.Info("rotated signing keys", "current", next.ID, "previous", cur.ID, "next", k.ID, "previous_retire_at", retire)
	return s.RefreshKeys(ctx)
}

// maybeRotate rotates when the current key is older than keys.rotate_every.
func (s *Server) maybeRotate(ctx context.Context) {
	cur := s.currentKey.Load()
	if cur == nil || s.now().Sub(cur.ActivatedAt) < s.cfg.Keys.RotateEvery.Std() {
		return
	}
	if err := s.RotateKeys(ctx, false); err != nil && !errors.Is(err, storage.ErrConflict) {
		s.log.Warn("scheduled key rotation", "err", err)
	}
}

func (s *Server) openKey(sk storage.SigningKey) (*claims.Key, error) {
	der, err := claims.Open(s.secrets.kek, sk.PrivateSealed, []byte(sk.ID))
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", sk.ID, err)
	}
	k, err := claims.ParsePrivate(sk.Algorithm, der)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", sk.ID, err)
	}
	if k.ID != sk.ID {
		return nil, fmt.Errorf("signing key %s: stored id does not match its thumbprint", sk.ID)
	}
	return k, nil
}

// newSealedKey generates a key and its storage row, private part sealed.
func (s *Server) newSealedKey(alg, state string) (*claims.Key, storage.SigningKey, error) {
	k, err := claims.GenerateKey(alg)
	if err != nil {
		return nil, storage.SigningKey{}, err
	}
	der, err := k.MarshalPrivate()
	if err != nil {
		return nil, storage.SigningKey{}, err
	}
	sealed, err := claims.Seal(s.secrets.kek, der, []byte(k.ID))
	if err != nil {
		return nil, storage.SigningKey{}, err
	}
	pub, err := k.MarshalPublic()
	if err != nil {
		return nil, storage.SigningKey{}, err
	}
	now := s.now()
	sk := storage.SigningKey{ID: k.ID, Algorithm: alg, PrivateSealed: sealed, PublicJWK: pub, State: state, CreatedAt: now}
	if state == storage.KeyCurrent {
		sk.ActivatedAt = now
	}
	return k, sk, nil
}

// createKey generates, seals and stores a key in the given state.
func (s *Server) createKey(ctx context.Context, alg, state string) error {
	k, sk, err := s.newSealedKey(alg, state)
	if err != nil {
		return err
	}
	ev := s.event(ctx, actor{Type: storage.ActorSystem, ID: "actas"}, "", "key.create", k.ID, "success", map[string]any{"algorithm": alg, "state": state})
	if err := s.store.AddSigningKey(ctx, sk, ev); err != nil {
		return err
	}
	s.log.Info("created signing key", "kid", k.ID, "alg", alg, "state", state)
	return nil
}

// keyRefreshInterval is how often a server re-reads signing keys, so that
// a rotation by another replica or by `actas keys rotate` is picked up.
const keyRefreshInterval = 30 * time.Second
