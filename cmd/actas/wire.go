package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/actas/actas/broker"
	"github.com/actas/actas/broker/secrets"
	"github.com/actas/actas/config"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage/sqlstore"
)

// app is a wired broker and what it owns.
type app struct {
	cfg    *config.Config
	store  *sqlstore.Store
	server *broker.Server
}

func (a *app) Close() error { return a.store.Close() }

// openStore derives the secrets and opens the configured storage,
// applying migrations.
func openStore(ctx context.Context, cfg *config.Config) (*sqlstore.Store, secrets.Keys, error) {
	secret, err := rootSecret(cfg)
	if err != nil {
		return nil, secrets.Keys{}, err
	}
	keys, err := secrets.Derive(secret)
	if err != nil {
		return nil, secrets.Keys{}, err
	}
	kind, dsn, err := config.StorageKind(cfg.Storage)
	if err != nil {
		return nil, keys, err
	}
	st, err := sqlstore.Open(ctx, kind, dsn, sqlstore.Options{Migrate: true, AuditKey: keys.AuditKey()})
	return st, keys, err
}

// rootSecret loads the root secret as DESIGN.md says: env, file, or (SQLite
// only) a 0600 key file beside the database created on first start.
func rootSecret(cfg *config.Config) ([]byte, error) {
	kind, dsn, err := config.StorageKind(cfg.Storage)
	if err != nil {
		return nil, err
	}
	create := ""
	if kind == "sqlite" {
		create = dsn + ".secret"
	}
	file := cfg.SecretKeyFile
	if file != "" && !filepath.IsAbs(file) {
		file, _ = filepath.Abs(file)
	}
	return secrets.LoadRoot(os.Getenv(config.SecretKeyEnv), file, create)
}

// wire builds the whole broker from an operator config and a policy.
func wire(ctx context.Context, cfg *config.Config, pol *policy.Policy, log *slog.Logger, reg *prometheus.Registry) (*app, error) {
	st, keys, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	srv, err := broker.New(ctx, broker.Config{
		Operator: cfg, Policy: pol, Store: st, Secrets: keys, Logger: log, Now: time.Now, Registry: reg,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	return &app{cfg: cfg, store: st, server: srv}, nil
}

// loadConfig loads and validates the config file, and refuses ACTAS_
// variables that name no key.
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path, os.Getenv)
	if err != nil {
		return nil, err
	}
	return cfg, checkEnv(cfg)
}

// checkEnv refuses ACTAS_ variables that name no key of cfg: a mistyped
// variable must not be silently ignored when a mistyped key is an error.
func checkEnv(cfg *config.Config) error {
	if probs := config.UnknownEnv(cfg, os.Environ()); len(probs) > 0 {
		return errors.New(strings.Join(probs, "; "))
	}
	return nil
}

// loadPolicy reads the policy file the config names, relative to the
// config file's directory.
func loadPolicy(cfgPath string, cfg *config.Config) (*policy.Policy, string, error) {
	p := cfg.PolicyFile
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(cfgPath), p)
	}
	pol, err := policy.Load(p)
	if err != nil {
		return nil, p, fmt.Errorf("policy: %w", err)
	}
	return pol, p, nil
}

// configFlag parses a command's flags, of which --config is required, and
// loads the config as a storage-only command needs it (storage and the
// root secret; not the identity providers or the clients' secrets); extra
// adds the command's own flags.
func configFlag(name, synopsis string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*config.Config, string, error) {
	fs := newFlags(name, synopsis, stderr)
	cfgPath := fs.String("config", "", "operator config file (required)")
	if extra != nil {
		extra(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, "", err
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return nil, "", errUsage
	}
	cfg, err := config.LoadStorage(*cfgPath, os.Getenv)
	if err != nil {
		return nil, "", err
	}
	return cfg, *cfgPath, checkEnv(cfg)
}

// configStore is configFlag, then the configured store.
func configStore(ctx context.Context, name, synopsis string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*sqlstore.Store, secrets.Keys, error) {
	cfg, _, err := configFlag(name, synopsis, args, stderr, extra)
	if err != nil {
		return nil, secrets.Keys{}, err
	}
	return openStore(ctx, cfg)
}
