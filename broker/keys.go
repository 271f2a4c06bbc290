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
// signs, every published key verifies. If no key is current it creates one
// of alg; a replica that loses the race to create it reads the winner's.
func (s *Server) loadKeySet(ctx context.Context, alg string) (*claims.KeySet, error) {
	for attempt := 0; attempt < 2; attempt++ {
		stored, err := s.store.SigningKeys(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading signing keys: %w", err)
		}
		var signing *claims.Key
		var published []*claims.Key
		for _, sk := range stored {
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
		if signing != nil {
			return claims.NewKeySet(signing, published)
		}
		if err := s.createKey(ctx, alg, storage.KeyCurrent); err != nil && !errors.Is(err, storage.ErrAlreadyExists) {
			return nil, err
		}
	}
	return nil, errors.New("no current signing key after creating one")
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

// createKey generates, seals and stores a key in the given state.
func (s *Server) createKey(ctx context.Context, alg, state string) error {
	k, err := claims.GenerateKey(alg)
	if err != nil {
		return err
	}
	der, err := k.MarshalPrivate()
	if err != nil {
		return err
	}
	sealed, err := claims.Seal(s.secrets.kek, der, []byte(k.ID))
	if err != nil {
		return err
	}
	pub, err := k.MarshalPublic()
	if err != nil {
		return err
	}
	now := s.now()
	sk := storage.SigningKey{ID: k.ID, Algorithm: alg, PrivateSealed: sealed, PublicJWK: pub, State: state, CreatedAt: now}
	if state == storage.KeyCurrent {
		sk.ActivatedAt = now
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
