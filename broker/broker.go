package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/actas/actas/claims"
	"github.com/actas/actas/config"
	"github.com/actas/actas/internal/boundcache"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// Config is everything a Server needs; the caller owns each part.
type Config struct {
	Operator *config.Config
	Policy   *policy.Policy
	Store    storage.Store
	Secrets  Secrets
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

// Server is the actas broker.
type Server struct {
	cfg       *config.Config
	store     storage.Store
	secrets   Secrets
	log       *slog.Logger
	now       func() time.Time
	skew      time.Duration
	policy    atomic.Pointer[policy.Policy]
	keys      atomic.Pointer[claims.KeySet]
	clients   map[string]*client
	audiences map[string]bool
	support   *upstream
	customers map[string]*customerIssuer
	metrics   *metrics
	registry  *prometheus.Registry
	handler   http.Handler
	inputs    *boundcache.Cache[string, inputs] // decoded claim snapshots by grant ID
	// currentKey is the stored row of the signing key, for scheduled rotation.
	currentKey atomic.Pointer[storage.SigningKey]
	usage      usage
	hooks      *http.Client // outgoing webhooks
	// seenAdmins throttles recording admin addresses to once an hour.
	seenAdmins *boundcache.Cache[string, time.Time]
	// lastRetention is when checkpoint and retention last ran; only the
	// maintenance goroutine touches it.
	lastRetention time.Time
}

type client struct {
	config.Client
	secretHash [32]byte
}

func (c *client) confidential() bool { return c.SecretEnv != "" }

// checkSecret compares in constant time (over hashes, so lengths leak
// nothing either).
func (c *client) checkSecret(secret string) bool {
	h := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(h[:], c.secretHash[:]) == 1
}

type customerIssuer struct {
	config.CustomerIDP
	up *upstream
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
	s := &Server{
		cfg: c.Operator, store: c.Store, secrets: c.Secrets, log: c.Logger, now: c.Now, skew: c.ClockSkew,
		clients: map[string]*client{}, audiences: map[string]bool{}, customers: map[string]*customerIssuer{},
		registry: c.Registry, inputs: boundcache.New[string, inputs](65536),
		hooks:      webhookClient(c.Operator.Notifications.AllowLoopbackWebhooks),
		seenAdmins: boundcache.New[string, time.Time](16384),
	}
	s.policy.Store(c.Policy)
	for _, cl := range c.Operator.Clients {
		s.clients[cl.ID] = &client{Client: cl, secretHash: sha256.Sum256([]byte(cl.Secret))}
		s.audiences[cl.Audience] = true
	}
	s.support = newUpstream(c.Operator.SupportIDP.Issuer, c.Operator.SupportIDP.ClientID, c.HTTPClient, c.Now, c.JWKSCooldown)
	for _, ci := range c.Operator.CustomerIDPs {
		s.customers[ci.Issuer] = &customerIssuer{CustomerIDP: ci, up: newUpstream(ci.Issuer, ci.Audience, c.HTTPClient, c.Now, c.JWKSCooldown)}
	}
	s.metrics = newMetrics(c.Registry, s)
	ks, err := s.loadKeySet(ctx, c.Operator.Keys.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	s.keys.Store(ks)
	s.handler = s.routes()
	return s, nil
}

// Handler returns the HTTP surface.
func (s *Server) Handler() http.Handler { return s.handler }

// Policy returns the policy in force.
func (s *Server) Policy() *policy.Policy { return s.policy.Load() }

// KeySet returns the key set in force.
func (s *Server) KeySet() *claims.KeySet { return s.keys.Load() }

// SetPolicy swaps the policy in force atomically and audits it.
func (s *Server) SetPolicy(ctx context.Context, p *policy.Policy, source string) error {
	old := s.policy.Swap(p)
	ev := s.event(ctx, actor{Type: storage.ActorSystem, ID: "actas"}, "", "policy.reload", source, "success",
		map[string]any{"previous_sha256": old.SHA256, "sha256": p.SHA256})
	return s.store.AppendAudit(ctx, ev)
}

// RefreshKeys re-reads signing keys from storage.
func (s *Server) RefreshKeys(ctx context.Context) error {
	ks, err := s.loadKeySet(ctx, s.cfg.Keys.Algorithm)
	if err != nil {
		return err
	}
	s.keys.Store(ks)
	return nil
}

// Run serves on ln until ctx is cancelled, then shuts down gracefully,
// letting requests in flight finish (up to 20s). It also re-reads keys
// periodically so rotations elsewhere are picked up.
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
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	outboxDone := make(chan struct{})
	go func() { defer close(outboxDone); s.runOutbox(ctx) }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(keyRefreshInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.RefreshKeys(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("refreshing signing keys", "err", err)
				}
				s.maybeRotate(ctx)
				s.flushUsage(ctx, false)
				s.recordExpiries(ctx)
				s.maybeRetain(ctx)
			}
		}
	}()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = srv.Shutdown(sctx)
		if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
			err = e
		}
	}
	<-done
	<-outboxDone
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.flushUsage(fctx, true) // requests have drained: nothing counted is lost
	return err
}

func (s *Server) routes() http.Handler {
	notFound := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, apiErr(http.StatusNotFound, "not_found", "no such endpoint"))
	})
	notAllowed := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, apiErr(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this endpoint"))
	})
	r := mux.NewRouter()
	r.NotFoundHandler, r.MethodNotAllowedHandler = notFound, notAllowed
	s.mountOAuth(r)
	s.mountAPI(r) // full paths: mux subrouters answer a wrong method with 404
	s.mountHooks(r)
	s.mountOps(r)
	return s.middleware(r)
}

type ctxKey int

const requestIDKey ctxKey = 1

// middleware assigns request IDs, bounds bodies, recovers panics into
// server_error, and records metrics.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-ID", id)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes+1)
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, id))
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic in handler", "request_id", id, "path", r.URL.Path, "err", fmt.Sprint(p))
				if !rec.wrote {
					writeOAuthError(rec, errServer)
				}
			}
			s.metrics.observe(r, rec.status, time.Since(start))
		}()
		next.ServeHTTP(rec, r)
	})
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// logger returns the server logger with the request's ID.
func (s *Server) logger(ctx context.Context) *slog.Logger {
	if id, ok := ctx.Value(requestIDKey).(string); ok {
		return s.log.With("request_id", id)
	}
	return s.log
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// actor is who performed an audited action.
type actor struct {
	Type, ID, Iss string
}

// event builds an audit event stamped with the policy in force.
func (s *Server) event(_ context.Context, a actor, tenant, action, target, outcome string, detail map[string]any) storage.AuditEvent {
	var d []byte
	if detail != nil {
		d, _ = json.Marshal(detail)
	}
	return storage.AuditEvent{
		Time: s.now().UTC(), TenantID: tenant, ActorType: a.Type, ActorID: a.ID, ActorIss: a.Iss,
		Action: action, Target: target, Outcome: outcome, Detail: d, PolicySHA256: s.policy.Load().SHA256,
	}
}

// randomToken returns n random bytes, base64url.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // unrecoverable: never issue weak tokens
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
