package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/actas/actas/config"
	"github.com/actas/actas/examples"
	"github.com/actas/actas/internal/logbuf"
	"github.com/actas/actas/policy"
)

// devDB is the config-less dev setup's database, in the working directory;
// devEnvFile is where it writes the walkthrough's variables once ready.
const (
	devDB      = "actas.db"
	devEnvFile = "actas-dev.env"
)

const (
	// logFlush bounds how long a log line is held before it is written.
	logFlush = 100 * time.Millisecond
	// serveGCPercent is the server's GOGC unless the environment sets one.
	serveGCPercent = 400
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "[--config actas.yaml] [--listen ADDR]", stderr)
	cfgPath := fs.String("config", "", "operator config file; without it, a loopback dev setup on SQLite")
	listenFlag := fs.String("listen", "", "host:port to listen on (overrides listen and ACTAS_LISTEN)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) to this file until the server stops")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// A request allocates a few kilobytes and the live heap is small:
	// collecting at five times the live heap, not twice, took 13% off the
	// CPU of an introspection under load. GOGC still overrides it.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
	// The log is a line per request: it is written in batches, at most
	// logFlush late, and flushed when the server stops.
	logw := logbuf.New(stderr)
	logCtx, stopLog := context.WithCancel(context.Background())
	logDone := make(chan struct{})
	go func() { logw.Run(logCtx, logFlush); close(logDone) }()
	defer func() { stopLog(); <-logDone }()
	log := slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if *cfgPath == "" {
		return serveDev(ctx, *listenFlag, stdout, log)
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *listenFlag != "" {
		cfg.Listen = *listenFlag
	}
	pol, policyPath, err := loadPolicy(*cfgPath, cfg)
	if err != nil {
		return err
	}
	ln, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, pol, policyPath, ln, log, nil)
}

// serveDev runs the loopback dev setup: SQLite in the working directory,
// the built-in identity providers (kept across restarts), the sample
// policy. It takes the port before printing anything.
func serveDev(ctx context.Context, addr string, stdout io.Writer, log *slog.Logger) error {
	if addr == "" {
		addr = os.Getenv("ACTAS_LISTEN")
	}
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	if host, _, err := net.SplitHostPort(addr); err != nil || !config.IsLoopback(host) {
		return fmt.Errorf("the dev setup listens on loopback only; got %q (with a config file, listen anywhere)", addr)
	}
	os.Remove(devEnvFile) // never leave a stale one for scripts waiting on it
	ln, err := listen(addr)
	if err != nil {
		return err
	}
	env, err := newDevEnv(ln.Addr().String(), "sqlite://"+devDB, true)
	if err != nil {
		ln.Close()
		return err
	}
	defer env.Close()
	if err := checkEnv(env.cfg); err != nil {
		ln.Close()
		return err
	}
	pol, err := policy.Parse("examples/policy.yaml", examples.Policy)
	if err != nil {
		ln.Close()
		return err
	}
	vars := devVars(env)
	printDevBanner(stdout, env, vars)
	return serve(ctx, env.cfg, pol, "", ln, log, func() error {
		return os.WriteFile(devEnvFile, []byte(vars), 0o600)
	})
}

// listen takes the address, with advice when it is taken.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%s is already in use: choose another address with --listen (or ACTAS_LISTEN)", addr)
	}
	return ln, err
}

// serve wires the broker and runs it on ln until ctx ends; ready, if set,
// runs once the server is about to accept requests.
func serve(ctx context.Context, cfg *config.Config, pol *policy.Policy, policyPath string, ln net.Listener, log *slog.Logger, ready func() error) error {
	a, err := wire(ctx, cfg, pol, log, prometheus.NewRegistry())
	if err != nil {
		ln.Close()
		return err
	}
	defer a.Close()
	log.Info("actas serving", "issuer", cfg.Issuer, "listen", ln.Addr().String(),
		"policy_sha256", pol.SHA256, "signing_key", a.server.KeySet().SigningKeyID())
	if policyPath != "" {
		if err := a.server.WatchPolicy(ctx, policyPath); err != nil {
			ln.Close()
			return err
		}
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					a.server.ReloadPolicy(ctx, policyPath)
					if err := a.server.RefreshKeys(ctx); err != nil {
						log.Error("refreshing signing keys", "err", err)
					}
				}
			}
		}()
	}
	if ready != nil {
		if err := ready(); err != nil {
			ln.Close()
			return err
		}
	}
	err = a.server.Run(ctx, ln)
	log.Info("actas stopped")
	return err
}

// devVars are the walkthrough's shell variables.
func devVars(env *devEnv) string {
	admin := env.customer.Mint(devAdmin, "actas", 8*time.Hour, devAdminClaims())
	eng := env.support.Mint(devEngineer, "actas", 8*time.Hour, devEngineerClaims())
	return fmt.Sprintf("export ACTAS=%s\nexport ADMIN=%s\nexport ENGINEER=%s\nexport PRODUCT_SECRET=%s\n",
		env.cfg.Issuer, admin, eng, env.productSecret)
}

// devWalkthrough is the story through curl, line by line copy-pasteable:
// grant, exchange, introspect, terminate, introspect again.
const devWalkthrough = `# 1. the tenant admin turns support access on
curl -sS -X PUT -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
     -d '{"enabled":true}' $ACTAS/api/v1/tenants/acme/support-access
# 2. the customer gives support access; the answer holds the one-time code
GRANT=$(curl -sS -X POST -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
     -d '{"role":"manage","environments":["production"],"expires_in":3600}' $ACTAS/api/v1/tenants/acme/grants)
echo "$GRANT"
CODE=$(echo "$GRANT" | sed -n 's/.*"code":"\([0-9]*\)".*/\1/p')
GRANT_ID=$(echo "$GRANT" | sed -n 's/.*"id":"\(grt_[^"]*\)".*/\1/p')
# 3. the engineer exchanges the code and their ID token (RFC 8693)
TOKEN=$(curl -sS -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange -d client_id=actas-cli \
     -d tenant=acme -d subject_token=$CODE -d subject_token_type=urn:actas:params:oauth:token-type:support-code \
     -d actor_token=$ENGINEER -d actor_token_type=urn:ietf:params:oauth:token-type:id_token $ACTAS/token \
     | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
# 4. the product introspects it: active, sub ada acting as act alice
curl -sS -u product:$PRODUCT_SECRET -d token=$TOKEN $ACTAS/introspect
# 5. the customer terminates the grant
curl -sS -X DELETE -H "Authorization: Bearer $ADMIN" $ACTAS/api/v1/tenants/acme/grants/$GRANT_ID
# 6. the very next introspection: {"active":false}
curl -sS -u product:$PRODUCT_SECRET -d token=$TOKEN $ACTAS/introspect
`

func printDevBanner(w io.Writer, env *devEnv, vars string) {
	fmt.Fprintf(w, `actas dev setup — loopback only, identity providers built in, NOT for production
  issuer        %s
  storage       %s (root secret, dev IdP keys and the product secret beside it, 0600; kept across restarts)
  policy        built-in examples/policy.yaml
  product       client_id=%s (may introspect)
  CLI client    client_id=%s (public; 'actas support login --broker %s' signs in as alice at once)
  customer page %s/ui/ (signs in as ada, admin of acme, at once)

Paste these, or run '. ./%s' (written once the server is ready):

%s
%s
`, env.cfg.Issuer, env.cfg.Storage, devProductClient, devCLIClient, env.cfg.Issuer, env.cfg.Issuer, devEnvFile, strings.TrimSpace(vars), devWalkthrough)
}
