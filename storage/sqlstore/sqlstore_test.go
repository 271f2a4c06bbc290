package sqlstore_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
	"github.com/actas/actas/storage/sqlstore"
	"github.com/actas/actas/storage/storetest"
)

func openSQLite(t testing.TB) storage.Store {
	path := filepath.Join(t.TempDir(), "actas.db")
	s, err := sqlstore.Open(context.Background(), "sqlite", path, sqlstore.Options{Migrate: true, AuditKey: testAuditKey, PruneBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storage.Store { return openSQLite(t) }, testAuditKey)
}

// PostgresDSN returns the test DSN; the tests skip only when none is set,
// and .ci/run always sets one.
func postgresDSN(t testing.TB) string {
	dsn := os.Getenv("ACTAS_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("ACTAS_TEST_POSTGRES_DSN not set")
	}
	return dsn
}

// openPostgres gives each test a schema of its own in the test database.
func openPostgres(t testing.TB) storage.Store {
	dsn := postgresDSN(t)
	b := make([]byte, 6)
	rand.Read(b)
	schema := fmt.Sprintf("t_%x", b)
	admin, err := sqlx.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a, err := sqlx.Open("pgx", dsn)
		if err == nil {
			a.Exec("DROP SCHEMA " + schema + " CASCADE")
			a.Close()
		}
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	s, err := sqlstore.Open(context.Background(), "postgres", dsn+sep+"search_path="+schema, sqlstore.Options{Migrate: true, AuditKey: testAuditKey, PruneBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storage.Store { return openPostgres(t) }, testAuditKey)
}

func TestSchemaVersionGuard(t *testing.T) {
	path := filepath.Join(t.TempDir(), "actas.db")
	if _, err := sqlstore.Open(context.Background(), "sqlite", path, sqlstore.Options{AuditKey: testAuditKey}); err == nil || !strings.Contains(err.Error(), "actas migrate") {
		t.Fatalf("unmigrated database opened: %v", err)
	}
	n, err := sqlstore.Migrate(context.Background(), "sqlite", path, storetestNow())
	if err != nil || n != sqlstore.LatestVersion() {
		t.Fatalf("migrate: %d %v", n, err)
	}
	n, err = sqlstore.Migrate(context.Background(), "sqlite", path, storetestNow())
	if err != nil || n != 0 {
		t.Fatalf("second migrate applied %d (%v), want 0", n, err)
	}
	s, err := sqlstore.Open(context.Background(), "sqlite", path, sqlstore.Options{AuditKey: testAuditKey})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// Replicas starting at once on one PostgreSQL database migrate it once.
func TestPostgresConcurrentMigrate(t *testing.T) {
	dsn := postgresDSN(t)
	b := make([]byte, 6)
	rand.Read(b)
	schema := fmt.Sprintf("m_%x", b)
	admin, err := sqlx.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	admin.MustExec("CREATE SCHEMA " + schema)
	defer admin.Exec("DROP SCHEMA " + schema + " CASCADE")
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	url := dsn + sep + "search_path=" + schema
	errs := make(chan error, 8)
	applied := make(chan int, 8)
	for i := 0; i < 8; i++ {
		go func() {
			n, err := sqlstore.Migrate(context.Background(), "postgres", url, storetestNow())
			errs <- err
			applied <- n
		}()
	}
	total := 0
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Errorf("concurrent migrate: %v", err)
		}
		total += <-applied
	}
	if total != sqlstore.LatestVersion() {
		t.Fatalf("%d migrations applied in all, want each of %d exactly once", total, sqlstore.LatestVersion())
	}
}
