package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/actas/actas/broker/secrets"
	"github.com/actas/actas/config"
	"github.com/actas/actas/storage/sqlstore"
)

// rootSecret is the load run's ACTAS_SECRET_KEY.
const rootSecret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// seed fills the storage URL with n grants, 10 tokens and 5 audit events
// each, over n/1000 tenants (at least one), through actas's own storage
// code, before actas starts on it.
func seed(storageURL string, n int) error {
	kind, dsn, err := config.StorageKind(storageURL)
	if err != nil {
		return err
	}
	root, err := base64.StdEncoding.DecodeString(rootSecret)
	if err != nil {
		return err
	}
	keys, err := secrets.Derive(root)
	if err != nil {
		return err
	}
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, kind, dsn, sqlstore.Options{Migrate: true, AuditKey: keys.AuditKey()})
	if err != nil {
		return err
	}
	defer st.Close()
	start, last := time.Now(), 0
	fmt.Printf("actas-load: seeding %d grants, %d tokens, %d audit events into %s\n", n, 10*n, 5*n, strings.SplitN(storageURL, "://", 2)[0])
	err = st.Seed(ctx, sqlstore.SeedParams{Grants: n, Tenants: max(n/1000, 1), TokensPerGrant: 10, EventsPerGrant: 5, Now: time.Now(),
		Progress: func(done int) {
			if done*10/n != last*10/n || done == n {
				fmt.Printf("  %d grants in %s\n", done, time.Since(start).Round(time.Second))
			}
			last = done
		}})
	return err
}
