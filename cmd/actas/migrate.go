package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/actas/actas/config"
	"github.com/actas/actas/storage/sqlstore"
)

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate", "--config actas.yaml", stderr)
	cfgPath := fs.String("config", "", "operator config file (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	kind, dsn, err := config.StorageKind(cfg.Storage)
	if err != nil {
		return err
	}
	n, err := sqlstore.Migrate(ctx, kind, dsn, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: applied %d migration(s); schema at version %d\n", kind, n, sqlstore.LatestVersion())
	return nil
}
