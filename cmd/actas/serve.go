package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/actas/actas/config"
	"github.com/actas/actas/examples"
	"github.com/actas/actas/policy"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "[--config actas.yaml]", stderr)
	cfgPath := fs.String("config", "", "operator config file; without it, a loopback dev setup on SQLite")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := prometheus.NewRegistry()

	var cfg *config.Config
	var pol *policy.Policy
	policyPath := ""
	if *cfgPath == "" {
		env, err := newDevEnv("127.0.0.1:8080", "sqlite://actas.db")
		if err != nil {
			return err
		}
		defer env.Close()
		cfg = env.cfg
		if pol, err = policy.Parse("examples/policy.yaml", examples.Policy); err != nil {
			return err
		}
		printDevBanner(stdout, env)
	} else {
		var err error
		if cfg, err = loadConfig(*cfgPath); err != nil {
			return err
		}
		if pol, policyPath, err = loadPolicy(*cfgPath, cfg); err != nil {
			return err
		}
	}
	a, err := wire(ctx, cfg, pol, log, reg)
	if err != nil {
		return err
	}
	defer a.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	log.Info("actas serving", "issuer", cfg.Issuer, "listen", ln.Addr().String(),
		"policy_sha256", pol.SHA256, "signing_key", a.server.KeySet().SigningKeyID())

	if policyPath != "" {
		if err := a.server.WatchPolicy(ctx, policyPath); err != nil {
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
	err = a.server.Run(ctx, ln)
	log.Info("actas stopped")
	return err
}

func printDevBanner(w io.Writer, env *devEnv) {
	admin := env.customer.Mint("ada", "actas", 8*time.Hour, map[string]any{"org_id": "acme", "role": "admin", "email": "ada@acme.example", "plan": "enterprise"})
	eng := env.support.Mint("alice", "actas", 8*time.Hour, map[string]any{"groups": []string{"support"}, "email": "alice@support.example", "amr": []string{"pwd", "mfa"}})
	iss := env.cfg.Issuer
	fmt.Fprintf(w, `actas dev setup — loopback only, identity providers built in, NOT for production
  issuer        %s
  storage       %s (root secret beside it, 0600)
  policy        built-in examples/policy.yaml
  product       client_id=%s client_secret=%s (may introspect)
  CLI client    client_id=%s (public)

  export ADMIN=%s
  export ENGINEER=%s

  curl -X PUT -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
       -d '{"enabled":true}' %s/api/v1/tenants/acme/support-access
  curl -X POST -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
       -d '{"role":"manage","environments":["production"],"expires_in":3600}' %s/api/v1/tenants/acme/grants
  curl -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange -d client_id=%s -d tenant=acme \
       -d subject_token=CODE -d subject_token_type=urn:actas:params:oauth:token-type:support-code \
       -d actor_token=$ENGINEER -d actor_token_type=urn:ietf:params:oauth:token-type:id_token %s/token

`, iss, env.cfg.Storage, devProductClient, env.productSecret, devCLIClient, admin, eng, iss, iss, devCLIClient, iss)
}
