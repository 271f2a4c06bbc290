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
	cfg, _, err := configFlag("migrate", "--config actas.yaml", args, stderr, nil)
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
