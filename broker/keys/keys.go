package keys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/claims"
	"github.com/actas/actas/storage"
)

// Store is the storage the key lifecycle needs.
type Store interface {
	SigningKeys(ctx context.Context) ([]storage.SigningKey, error)
	AddSigningKey(ctx context.Context, k storage.SigningKey, ev storage.AuditEvent) error
	RotateKeys(ctx context.Context, p storage.RotateParams) error
}

// Config is what a Manager needs.
type Config struct {
	Store     Store
	KEK       []byte // seals private keys at rest
	Algorithm string // of new keys
	// RotateEvery is the age at which MaybeRotate rotates; 0 never.
	RotateEvery time.Duration
	// AccessTTL is the longest an access token lives: the outgoing key
	// stays published that long after a rotation.
	AccessTTL func() time.Duration
	// PolicySHA names the policy in force on audit events.
	PolicySHA func() string
	ClockSkew time.Duration
	Logger    *slog.Logger
	Now       func() time.Time
}

// Manager holds the key set in force and changes it.
type Manager struct {
	c       Config
	set     atomic.Pointer[claims.KeySet]
	current atomic.Pointer[storage.SigningKey] // for scheduled rotation
}

// RefreshInterval is how often a server re-reads signing keys, so that a
// rotation by another replica or by `actas keys rotate` is picked up.
const RefreshInterval = 30 * time.Second

// minNextAge is how long a next key must have been published before it may
// sign: longer than replicas take to re-read keys and relying parties to
// refresh a cached JWKS (max-age 60s).
const minNextAge = 2 * time.Minute

// ErrNextTooNew refuses a rotation whose next key relying parties may not
// have seen yet.
var ErrNextTooNew = errors.New("the next key was published too recently")

// New loads (creating when missing) the stored keys.
func New(ctx context.Context, c Config) (*Manager, error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.PolicySHA == nil {
		c.PolicySHA = func() string { return "" }
	}
	m := &Manager{c: c}
	if err := m.Refresh(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// KeySet returns the key set in force.
func (m *Manager) KeySet() *claims.KeySet { return m.set.Load() }

// Refresh re-reads signing keys from storage.
func (m *Manager) Refresh(ctx context.Context) error {
	ks, err := m.load(ctx)
	if err != nil {
		return err
	}
	m.set.Store(ks)
	return nil
}

// load reads the stored keys and builds the key set: the current key
// signs, every published key (next, current, previous within its window)
// verifies. It creates a current and a next key when missing; a replica
// that loses the race to create one reads the winner's.
func (m *Manager) load(ctx context.Context) (*claims.KeySet, error) {
	for attempt := 0; attempt < 3; attempt++ {
		stored, err := m.c.Store.SigningKeys(ctx)
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
				m.current.Store(&sk)
			}
			k, err := m.open(sk)
			if err != nil {
				return nil, err
			}
			if sk.State == storage.KeyCurrent {
				signing = k
			}
			if sk.State == storage.KeyPrevious && !sk.RetireAt.IsZero() && !m.c.Now().Before(sk.RetireAt) {
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
		if err := m.create(ctx, state); err != nil && !errors.Is(err, storage.ErrAlreadyExists) {
			return nil, err
		}
	}
	return nil, errors.New("signing keys still missing after creating them")
}

// Rotate makes the published next key current, keeps the outgoing key
// published until every token it signed has expired (plus the time replicas
// take to notice and clock skew), and publishes a fresh next key. Another
// replica rotating at the same moment makes this a no-op (ErrConflict).
func (m *Manager) Rotate(ctx context.Context, force bool) error {
	stored, err := m.c.Store.SigningKeys(ctx)
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
	now := m.c.Now()
	if cur == nil || next == nil {
		return fmt.Errorf("%w: no current or next key; start actas once first", storage.ErrConflict)
	}
	if age := now.Sub(next.CreatedAt); age < minNextAge && !force {
		return fmt.Errorf("%w: published %s ago, wait until it has been %s (or force)", ErrNextTooNew, age.Round(time.Second), minNextAge)
	}
	k, sk, err := m.newSealed(storage.KeyNext)
	if err != nil {
		return err
	}
	retire := now.Add(m.c.AccessTTL() + RefreshInterval + m.c.ClockSkew)
	ev := audit.Event(now, m.c.PolicySHA(), audit.System, "", audit.KeyRotate, next.ID, audit.Success, map[string]any{
		"previous": cur.ID, "current": next.ID, "next": k.ID, "previous_retire_at": retire.UTC().Format(time.RFC3339)})
	if err := m.c.Store.RotateKeys(ctx, storage.RotateParams{ExpectCurrent: cur.ID, Now: now, RetireAt: retire, NewNext: sk, Event: ev}); err != nil {
		return err
	}
	m.c.Logger.Info("rotated signing keys", "current", next.ID, "previous", cur.ID, "next", k.ID, "previous_retire_at", retire)
	return m.Refresh(ctx)
}

// MaybeRotate rotates when the current key is older than RotateEvery.
func (m *Manager) MaybeRotate(ctx context.Context) {
	cur := m.current.Load()
	if cur == nil || m.c.RotateEvery <= 0 || m.c.Now().Sub(cur.ActivatedAt) < m.c.RotateEvery {
		return
	}
	if err := m.Rotate(ctx, false); err != nil && !errors.Is(err, storage.ErrConflict) {
		m.c.Logger.Warn("scheduled key rotation", "err", err)
	}
}

func (m *Manager) open(sk storage.SigningKey) (*claims.Key, error) {
	der, err := claims.Open(m.c.KEK, sk.PrivateSealed, []byte(sk.ID))
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

// newSealed generates a key and its storage row, private part sealed.
func (m *Manager) newSealed(state string) (*claims.Key, storage.SigningKey, error) {
	alg := m.c.Algorithm
	k, err := claims.GenerateKey(alg)
	if err != nil {
		return nil, storage.SigningKey{}, err
	}
	der, err := k.MarshalPrivate()
	if err != nil {
		return nil, storage.SigningKey{}, err
	}
	sealed, err := claims.Seal(m.c.KEK, der, []byte(k.ID))
	if err != nil {
		return nil, storage.SigningKey{}, err
	}
	pub, err := k.MarshalPublic()
	if err != nil {
		return nil, storage.SigningKey{}, err
	}
	now := m.c.Now()
	sk := storage.SigningKey{ID: k.ID, Algorithm: alg, PrivateSealed: sealed, PublicJWK: pub, State: state, CreatedAt: now}
	if state == storage.KeyCurrent {
		sk.ActivatedAt = now
	}
	return k, sk, nil
}

// create generates, seals and stores a key in the given state.
func (m *Manager) create(ctx context.Context, state string) error {
	k, sk, err := m.newSealed(state)
	if err != nil {
		return err
	}
	ev := audit.Event(m.c.Now(), m.c.PolicySHA(), audit.System, "", audit.KeyCreate, k.ID, audit.Success,
		map[string]any{"algorithm": m.c.Algorithm, "state": state})
	if err := m.c.Store.AddSigningKey(ctx, sk, ev); err != nil {
		return err
	}
	m.c.Logger.Info("created signing key", "kid", k.ID, "alg", m.c.Algorithm, "state", state)
	return nil
}
