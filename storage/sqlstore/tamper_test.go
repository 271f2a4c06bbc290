package sqlstore_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
	"github.com/actas/actas/storage/sqlstore"
)

// rawStore opens a store and, beside it, a raw connection to the same
// database, as an attacker with database access would have.
type rawOpener func(t *testing.T) (storage.Store, *sqlx.DB)

func rawSQLite(t *testing.T) (storage.Store, *sqlx.DB) {
	path := filepath.Join(t.TempDir(), "actas.db")
	s, err := sqlstore.Open(context.Background(), "sqlite", path, sqlstore.Options{Migrate: true, AuditKey: testAuditKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	db := sqlx.MustOpen("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	t.Cleanup(func() { db.Close() })
	return s, db
}

func rawPostgres(t *testing.T) (storage.Store, *sqlx.DB) {
	dsn := postgresDSN(t)
	b := make([]byte, 6)
	rand.Read(b)
	schema := fmt.Sprintf("x_%x", b)
	admin := sqlx.MustOpen("pgx", dsn)
	admin.MustExec("CREATE SCHEMA " + schema)
	t.Cleanup(func() { admin.Exec("DROP SCHEMA " + schema + " CASCADE"); admin.Close() })
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	url := dsn + sep + "search_path=" + schema
	s, err := sqlstore.Open(context.Background(), "postgres", url, sqlstore.Options{Migrate: true, AuditKey: testAuditKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	db := sqlx.MustOpen("pgx", url)
	t.Cleanup(func() { db.Close() })
	return s, db
}

func TestTamperSQLite(t *testing.T)   { runTamper(t, rawSQLite) }
func TestTamperPostgres(t *testing.T) { runTamper(t, rawPostgres) }

func runTamper(t *testing.T, open rawOpener) {
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	fill := func(t *testing.T, s storage.Store) {
		for i := 1; i <= 5; i++ {
			for _, tenant := range []string{"acme", "other"} {
				err := s.AppendAudit(context.Background(), storage.AuditEvent{Time: t0.Add(time.Duration(i) * time.Minute), TenantID: tenant,
					ActorType: storage.ActorTenantAdmin, ActorID: "ada", Action: "grant.create", Target: fmt.Sprintf("grt_%d", i),
					Outcome: "success", Detail: []byte(fmt.Sprintf(`{"role":"monitor","n":%d}`, i))})
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, tc := range []struct {
		name    string
		tamper  []string
		wantSeq int64
		reason  string
	}{
		{"edited detail", []string{`UPDATE audit_events SET detail = '{"role":"admin","n":3}' WHERE tenant_id = 'acme' AND seq = 3`}, 3, "edited"},
		{"edited actor", []string{`UPDATE audit_events SET actor_id = 'mallory' WHERE tenant_id = 'acme' AND seq = 2`}, 2, "edited"},
		{"edited time", []string{`UPDATE audit_events SET at = at + 1 WHERE tenant_id = 'acme' AND seq = 4`}, 4, "edited"},
		{"deleted middle row", []string{`DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = 3`}, 3, "missing"},
		{"deleted last row", []string{`DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq = 5`}, 4, "deleted"},
		{"inserted row", []string{`INSERT INTO audit_events (tenant_id, at, actor_type, actor_id, actor_iss, action, target, outcome, detail, policy_sha256, seq, prev_hash, hash)
			SELECT tenant_id, at, actor_type, 'mallory', actor_iss, action, target, outcome, detail, policy_sha256, 6, hash, hash FROM audit_events WHERE tenant_id = 'acme' AND seq = 5`}, 6, "edited"},
		{"swapped order", []string{
			`UPDATE audit_events SET seq = 1000 WHERE tenant_id = 'acme' AND seq = 2`,
			`UPDATE audit_events SET seq = 2 WHERE tenant_id = 'acme' AND seq = 3`,
			`UPDATE audit_events SET seq = 3 WHERE tenant_id = 'acme' AND seq = 1000`}, 2, "prev_hash"},
		{"moved to another tenant", []string{`UPDATE audit_events SET tenant_id = 'other', seq = 99 WHERE tenant_id = 'acme' AND seq = 4`}, 4, "missing"},
		{"edited head", []string{`UPDATE audit_heads SET seq = 4 WHERE tenant_id = 'acme'`}, 5, "head was edited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, db := open(t)
			fill(t, s)
			if n, err := audit.Verify(context.Background(), s, testAuditKey, nil); err != nil || n != 10 {
				t.Fatalf("untouched chain: %d %v", n, err)
			}
			for _, q := range tc.tamper {
				if _, err := db.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
			_, err := audit.Verify(context.Background(), s, testAuditKey, nil)
			var ce *audit.ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("tampering not detected: %v", err)
			}
			if ce.TenantID != "acme" || ce.Seq != tc.wantSeq || !strings.Contains(ce.Reason, tc.reason) {
				t.Fatalf("detected %v; want tenant acme, seq %d, reason mentioning %q", ce, tc.wantSeq, tc.reason)
			}
		})
	}
}

// BenchmarkAppendAudit measures appending one chained event in its own
// durable transaction.
func BenchmarkAppendAudit(b *testing.B) {
	path := filepath.Join(b.TempDir(), "actas.db")
	s, err := sqlstore.Open(context.Background(), "sqlite", path, sqlstore.Options{Migrate: true, AuditKey: testAuditKey})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ev := storage.AuditEvent{Time: time.Now(), TenantID: "acme", ActorType: storage.ActorTenantAdmin, ActorID: "ada",
		Action: "grant.create", Target: "grt_1", Outcome: "success", Detail: []byte(`{"role":"monitor"}`)}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.AppendAudit(context.Background(), ev); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRetentionSQLite(t *testing.T)   { runRetention(t, rawSQLite) }
func TestRetentionPostgres(t *testing.T) { runRetention(t, rawPostgres) }

func runRetention(t *testing.T, open rawOpener) {
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	prunedStore := func(t *testing.T) (storage.Store, *sqlx.DB) {
		s, db := open(t)
		for i := 1; i <= 5; i++ {
			for _, tenant := range []string{"acme", "other"} {
				if err := s.AppendAudit(ctx, storage.AuditEvent{Time: t0.Add(time.Duration(i) * time.Minute), TenantID: tenant,
					ActorType: storage.ActorSystem, ActorID: "actas", Action: "grant.create", Outcome: "success"}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := s.Checkpoint(ctx, t0.Add(10*time.Minute), nil); err != nil {
			t.Fatal(err)
		}
		r, err := s.Prune(ctx, storage.PruneParams{Now: t0.Add(time.Hour), AuditBefore: t0.Add(3 * time.Minute)})
		if err != nil || r.AuditEvents != 4 {
			t.Fatalf("prune: %+v %v", r, err)
		}
		return s, db
	}
	t.Run("ok/verifies after pruning", func(t *testing.T) {
		s, _ := prunedStore(t)
		n, err := audit.Verify(ctx, s, testAuditKey, nil)
		if err != nil || n != 6 {
			t.Fatalf("after pruning: %d %v", n, err)
		}
		// appending after a prune continues the same chain
		s.AppendAudit(ctx, storage.AuditEvent{Time: t0.Add(2 * time.Hour), TenantID: "acme", ActorType: storage.ActorSystem, ActorID: "x", Action: "a.b", Outcome: "success"})
		if n, err := audit.Verify(ctx, s, testAuditKey, nil); err != nil || n != 7 {
			t.Fatalf("after pruning and appending: %d %v", n, err)
		}
	})
	for _, tc := range []struct {
		name   string
		tamper []string
		reason string
	}{
		{"fail/edited anchor", []string{`UPDATE audit_anchors SET seq = 1 WHERE tenant_id = 'acme'`}, "prune anchor"},
		{"fail/truncated tail with a rewritten head", []string{
			`DELETE FROM audit_events WHERE tenant_id = 'acme' AND seq > 3`,
			`UPDATE audit_heads SET seq = 3, hash = (SELECT hash FROM audit_events WHERE tenant_id = 'acme' AND seq = 3) WHERE tenant_id = 'acme'`}, "checkpoint sealed seq 5"},
		{"fail/edited checkpoint", []string{`UPDATE audit_checkpoints SET body = replace(body, '"seq":5', '"seq":4') WHERE id = 1`}, "checkpoint was edited"},
		{"fail/deleted checkpoint", []string{`DELETE FROM audit_checkpoints WHERE id = 1`}, "checkpoint is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, db := prunedStore(t)
			for _, q := range tc.tamper {
				if _, err := db.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
			_, err := audit.Verify(ctx, s, testAuditKey, nil)
			var ce *audit.ChainError
			if !errors.As(err, &ce) || !strings.Contains(ce.Reason, tc.reason) {
				t.Fatalf("got %v, want a ChainError mentioning %q", err, tc.reason)
			}
		})
	}
}

// TestCheckpointer shows the WAL reaching the database file with the
// writer's automatic checkpoint off: the checkpointer copies it.
func TestCheckpointer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "actas.db")
	s, err := sqlstore.Open(context.Background(), "sqlite", path, sqlstore.Options{Migrate: true, AuditKey: testAuditKey})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	time.Sleep(500 * time.Millisecond) // the migrations are checkpointed
	before := size()
	ev := storage.AuditEvent{Time: time.Now(), TenantID: "acme", ActorType: storage.ActorTenantAdmin, ActorID: "ada",
		Action: "grant.create", Target: "grt_1", Outcome: "success", Detail: []byte(strings.Repeat(`{"pad":"x"}`, 100))}
	for range 200 {
		if err := s.AppendAudit(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for size() <= before {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes after 200 events: nothing checkpointed the WAL", before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
