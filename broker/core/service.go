package core

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/broker/secrets"
	"github.com/actas/actas/claims"
	"github.com/actas/actas/config"
	"github.com/actas/actas/internal/boundcache"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// Identity is a verified ID token of an upstream issuer.
type Identity struct {
	Subject, Issuer string
	Claims          map[string]any
}

// Verifier verifies ID tokens of one upstream issuer: signature, issuer,
// audience and expiry.
type Verifier interface {
	Verify(ctx context.Context, raw string) (Identity, error)
}

// ErrIdPDown means an upstream issuer could not be reached to verify.
var ErrIdPDown = errors.New("identity provider unreachable")

// KeySource is the key set in force.
type KeySource interface {
	KeySet() *claims.KeySet
}

// Counter counts events for metrics.
type Counter interface{ Inc() }

// Config is everything a Service needs; the caller owns each part.
type Config struct {
	Operator *config.Config
	Policy   *policy.Policy
	Store    storage.Store
	Secrets  secrets.Keys
	Keys     KeySource
	// Support verifies engineers' ID tokens; Customers verify customer
	// bearer tokens, by issuer.
	Support   Verifier
	Customers map[string]Verifier
	// PageVerifiers verify the ID tokens of the self-service page's
	// sign-in, by issuer (audience: the page's client_id there).
	PageVerifiers map[string]Verifier
	Logger        *slog.Logger
	Now           func() time.Time
	// ClockSkew is the leeway on token times. Default 30s.
	ClockSkew time.Duration
	// ReloadFailures counts rejected policy reloads, Lockouts tenant
	// lockouts; both optional.
	ReloadFailures Counter
	Lockouts       Counter
}

// Service is the domain core.
type Service struct {
	cfg       *config.Config
	store     storage.Store
	secrets   secrets.Keys
	keys      KeySource
	log       *slog.Logger
	now       func() time.Time
	skew      time.Duration
	timeout   time.Duration // bounds storage calls made for a request
	policy    atomic.Pointer[policy.Policy]
	audiences map[string]bool
	support   Verifier
	customers map[string]*customerIssuer
	// pageVerifiers: see Config.PageVerifiers.
	pageVerifiers map[string]Verifier
	feed          *feed
	reloadErr     Counter
	lockouts      Counter
	inputs        *boundcache.Cache[string, inputs] // decoded claim snapshots by grant ID
	usage         usage
	// seenAdmins throttles recording admin addresses to once an hour.
	seenAdmins *boundcache.Cache[string, time.Time]
	// lastBadPolicy is the sha256 of the last policy content that failed
	// to load, so that it is reported once.
	reloadMu      sync.Mutex
	lastBadPolicy string
	// lastRetention is when checkpoint and retention last ran; only the
	// maintenance loop touches it.
	lastRetention time.Time
}

type customerIssuer struct {
	config.CustomerIDP
	v Verifier
}

// New builds the core.
func New(c Config) (*Service, error) {
	if c.Operator == nil || c.Policy == nil || c.Store == nil || c.Keys == nil || c.Support == nil {
		return nil, errors.New("core: Operator, Policy, Store, Keys and Support are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = 30 * time.Second
	}
	s := &Service{
		cfg: c.Operator, store: c.Store, secrets: c.Secrets, keys: c.Keys, log: c.Logger, now: c.Now, skew: c.ClockSkew,
		audiences: map[string]bool{}, support: c.Support, customers: map[string]*customerIssuer{}, reloadErr: c.ReloadFailures, lockouts: c.Lockouts,
		inputs: boundcache.New[string, inputs](65536), seenAdmins: boundcache.New[string, time.Time](16384),
		pageVerifiers: c.PageVerifiers,
	}
	s.feed = newFeed(s)
	s.timeout = c.Operator.StorageTimeout.Std()
	if s.timeout <= 0 {
		s.timeout = 2 * time.Second
	}
	s.policy.Store(c.Policy)
	for _, cl := range c.Operator.Clients {
		s.audiences[cl.Audience] = true
	}
	for _, ci := range c.Operator.CustomerIDPs {
		v := c.Customers[ci.Issuer]
		if v == nil {
			return nil, errors.New("core: no verifier for customer issuer " + ci.Issuer)
		}
		s.customers[ci.Issuer] = &customerIssuer{CustomerIDP: ci, v: v}
	}
	return s, nil
}

// Policy returns the policy in force.
func (s *Service) Policy() *policy.Policy { return s.policy.Load() }

// Issuer is actas's own issuer URL.
func (s *Service) Issuer() string { return s.cfg.Issuer }

// Now is the core's clock.
func (s *Service) Now() time.Time { return s.now() }

// ClockSkew is the leeway on token times.
func (s *Service) ClockSkew() time.Duration { return s.skew }

// bound limits the storage work of one request to storage_timeout: when
// the database stalls the caller gets KindUnavailable in bounded time,
// never an answer from stale state.
func (s *Service) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// event builds an audit event stamped now with the policy in force.
func (s *Service) event(a audit.Actor, tenant, action, target, outcome string, detail map[string]any) storage.AuditEvent {
	return audit.Event(s.now(), s.policy.Load().SHA256, a, tenant, action, target, outcome, detail)
}

// appendAudit writes an event that belongs to no other change; a failure
// is logged, never shown.
func (s *Service) appendAudit(ctx context.Context, ev storage.AuditEvent) {
	if err := s.store.AppendAudit(ctx, ev); err != nil {
		s.log.ErrorContext(ctx, "audit: writing event", "action", ev.Action, "err", err)
	}
}
