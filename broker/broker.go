package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/actas/actas/broker/api"
	"github.com/actas/actas/broker/authorize"
	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/hooks"
	"github.com/actas/actas/broker/httpx"
	"github.com/actas/actas/broker/keys"
	"github.com/actas/actas/broker/notify"
	"github.com/actas/actas/broker/oauth"
	"github.com/actas/actas/broker/ops"
	"github.com/actas/actas/broker/scim"
	"github.com/actas/actas/broker/secrets"
	"github.com/actas/actas/broker/signals"
	"github.com/actas/actas/broker/ssf"
	"github.com/actas/actas/broker/ui"
	"github.com/actas/actas/broker/upstream"
	"github.com/actas/actas/broker/web"
	"github.com/actas/actas/claims"
	"github.com/actas/actas/config"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// Config is everything a Server needs; the caller owns each part.
type Config struct {
	Operator *config.Config
	Policy   *policy.Policy
	Store    storage.Store
	Secrets  secrets.Keys
	Logger   *slog.Logger
	Now      func() time.Time
	// HTTPClient talks to the upstream identity providers.
	HTTPClient *http.Client
	// JWKSCooldown is the least time between refetches of an upstream
	// JWKS on an unknown kid. Default 1 minute.
	JWKSCooldown time.Duration
	// Registry receives the Prometheus metrics; a new one if nil.
	Registry *prometheus.Registry
	// ClockSkew is the leeway on token times. Default 30s.
	ClockSkew time.Duration
}

// Server is an assembled broker.
type Server struct {
	cfg     *config.Config
	core    *core.Service
	keys    *keys.Manager
	outbox  *notify.Worker
	store   storage.Store
	log     *slog.Logger
	handler http.Handler
	metrics http.Handler // nil: /metrics is on the main listener
	// draining is set when shutdown starts: /readyz answers 503 from then.
	draining atomic.Bool
	// stopping closes when the listener shuts down, ending the live feeds
	// (Shutdown waits for handlers and cancels no request).
	stopping chan struct{}
}

// New builds a server: it loads (or creates) the signing keys; it does not
// contact identity providers until a token needs verifying.
func New(ctx context.Context, c Config) (*Server, error) {
	if c.Operator == nil || c.Policy == nil || c.Store == nil {
		return nil, errors.New("broker: Operator, Policy and Store are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	log := slog.New(httpx.LogHandler(c.Logger.Handler()))
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.JWKSCooldown == 0 {
		c.JWKSCooldown = time.Minute
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = 30 * time.Second
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	op := c.Operator
	s := &Server{cfg: op, store: c.Store, log: log}
	var err error
	s.keys, err = keys.New(ctx, keys.Config{
		Store: c.Store, KEK: c.Secrets.KEK(), Algorithm: op.Keys.Algorithm, RotateEvery: op.Keys.RotateEvery.Std(),
		AccessTTL: func() time.Duration { return s.core.Policy().AccessTTL },
		PolicySHA: func() string { return s.policySHA(c.Policy) },
		ClockSkew: c.ClockSkew, Logger: log, Now: c.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	m := registerMetrics(c.Registry, c.Store)
	customers, pageVerifiers := map[string]core.Verifier{}, map[string]core.Verifier{}
	for _, ci := range op.CustomerIDPs {
		customers[ci.Issuer] = upstream.New(ci.Issuer, ci.Audience, c.HTTPClient, c.Now, c.JWKSCooldown).CountFetches(m.jwksFetches)
		if ci.ClientID != "" {
			// The page's sign-in: ID tokens for actas's client there.
			pageVerifiers[ci.Issuer] = upstream.New(ci.Issuer, ci.ClientID, c.HTTPClient, c.Now, c.JWKSCooldown).IDTokensOnly().CountFetches(m.jwksFetches)
		}
	}
	s.core, err = core.New(core.Config{
		Operator: op, Policy: c.Policy, Store: c.Store, Secrets: c.Secrets, Keys: s.keys,
		Support: upstream.New(op.SupportIDP.Issuer, op.SupportIDP.ClientID, c.HTTPClient, c.Now, c.JWKSCooldown).
			IDTokensOnly().CountFetches(m.jwksFetches),
		Customers: customers, PageVerifiers: pageVerifiers, Logger: log, Now: c.Now, ClockSkew: c.ClockSkew,
		ReloadFailures: m.reloadFailures, Lockouts: m.lockouts,
	})
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	logoutURIs := map[string]string{}
	var logoutClients []string
	for _, cl := range op.Clients {
		if cl.BackchannelLogoutURI != "" {
			logoutURIs[cl.ID] = cl.BackchannelLogoutURI
			logoutClients = append(logoutClients, cl.ID)
		}
	}
	if h, ok := c.Store.(interface{ SetLogoutClients([]string) }); ok {
		h.SetLogoutClients(logoutClients) // grant and session ends queue logout tokens for these
	}
	s.outbox = notify.New(notify.Config{Store: c.Store, Notifications: op.Notifications, Logger: log, Now: c.Now,
		PolicySHA: func() string { return s.core.Policy().SHA256 }, Registry: c.Registry,
		Streams: c.Store, Keys: func() signals.Signer { return s.keys.KeySet() }, Issuer: op.Issuer, LogoutURIs: logoutURIs})
	if h, ok := c.Store.(interface{ OnOutbox(func()) }); ok {
		h.OnOutbox(s.outbox.Wake) // push events leave at once, not at the next poll
	}

	// SkipClean: a non-canonical path ("//token", "/a/../token") is not
	// redirected with a bodyless 301 but answered like any unknown path.
	r := mux.NewRouter().SkipClean(true)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		api.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint", "")
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		api.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this endpoint", "")
	})
	oauth.New(s.core, s.keys, op, log, c.Registry).Mount(r)
	authorize.New(s.core, op, c.HTTPClient, log).Mount(r)
	s.stopping = make(chan struct{})
	ui.New(s.core, op, c.HTTPClient, log, s.stopping).Mount(r)
	r.PathPrefix("/assets/").Handler(web.Assets()).Methods(http.MethodGet)
	api.New(s.core, c.Secrets, log).Mount(r)
	hooks.New(s.core, op.TicketHook, log).Mount(r)
	ssf.New(s.core, log).Mount(r)
	scim.New(s.core, log).Mount(r)
	o := ops.New(c.Store, c.Registry, log, func() (map[string]any, bool) {
		return map[string]any{"policy_sha256": s.core.Policy().SHA256, "signing_key": s.keys.KeySet().SigningKeyID()}, !s.draining.Load()
	})
	o.Mount(r, op.MetricsListen == "")
	if op.MetricsListen != "" {
		s.metrics = o.Metrics()
	}
	s.handler = httpx.Middleware(r, log, httpx.NewMetrics(c.Registry))
	return s, nil
}

// policySHA is the policy in force, or the initial one while the core is
// being built (key creation audits before the core exists).
func (s *Server) policySHA(initial *policy.Policy) string {
	if s.core == nil {
		return initial.SHA256
	}
	return s.core.Policy().SHA256
}

// Handler returns the HTTP surface.
func (s *Server) Handler() http.Handler { return s.handler }

// Core returns the domain core.
func (s *Server) Core() *core.Service { return s.core }

// Policy returns the policy in force.
func (s *Server) Policy() *policy.Policy { return s.core.Policy() }

// KeySet returns the key set in force.
func (s *Server) KeySet() *claims.KeySet { return s.keys.KeySet() }

// Keys returns the signing-key manager.
func (s *Server) Keys() *keys.Manager { return s.keys }

// ReloadPolicy reloads the policy file; see core.Service.ReloadPolicy.
func (s *Server) ReloadPolicy(ctx context.Context, path string) error {
	return s.core.ReloadPolicy(ctx, path)
}

// WatchPolicy reloads the policy file when it changes, until ctx ends.
func (s *Server) WatchPolicy(ctx context.Context, path string) error {
	return s.core.WatchPolicy(ctx, path)
}

// RefreshKeys re-reads signing keys from storage.
func (s *Server) RefreshKeys(ctx context.Context) error { return s.keys.Refresh(ctx) }

// Run serves on ln until ctx is cancelled, then shuts down gracefully,
// letting requests in flight finish (up to 20s). Beside the server it runs
// the outbox worker and the maintenance loop, and waits for both.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(func() { close(s.stopping) })
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	var msrv *http.Server
	if s.metrics != nil {
		mln, err := net.Listen("tcp", s.cfg.MetricsListen)
		if err != nil {
			srv.Close()
			return fmt.Errorf("metrics_listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", s.metrics)
		msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
		go func() {
			if err := msrv.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("metrics listener", "err", err)
			}
		}()
		defer msrv.Close()
	}
	outboxDone := make(chan struct{})
	go func() { defer close(outboxDone); s.outbox.Run(ctx) }()
	maintDone := make(chan struct{})
	go func() { defer close(maintDone); s.maintain(ctx) }()
	feedDone := make(chan struct{})
	go func() { defer close(feedDone); s.core.RunFeed(ctx) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		// Not ready from now on; keep serving for drain_delay so that load
		// balancers stop routing here before the listener closes.
		s.draining.Store(true)
		if d := s.cfg.DrainDelay.Std(); d > 0 {
			s.log.Info("draining", "delay", d)
			time.Sleep(d)
		}
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = srv.Shutdown(sctx)
		if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
			err = e
		}
	}
	<-maintDone
	<-outboxDone
	<-feedDone
	// Requests have drained: write every count. A failure is the exit
	// status, not a silent loss.
	fctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if ferr := s.core.FlushUsage(fctx, true); ferr != nil && err == nil {
		err = ferr
	}
	return err
}

// maintain re-reads keys (so rotations elsewhere are picked up), rotates
// on schedule, flushes usage summaries, records expiries and applies
// retention, every keys.RefreshInterval until ctx ends.
func (s *Server) maintain(ctx context.Context) {
	t := time.NewTicker(keys.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.keys.Refresh(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("refreshing signing keys", "err", err)
			}
			s.keys.MaybeRotate(ctx)
			s.core.FlushUsage(ctx, false) // failures are logged and kept for the next flush
			s.core.RecordExpiries(ctx)
			s.core.MaybeRetain(ctx)
			s.core.PruneProofs(ctx)
			s.core.ExpireApprovals(ctx)
			s.core.EndExpiredSessions(ctx)
			s.core.PruneOP(ctx)
		}
	}
}
