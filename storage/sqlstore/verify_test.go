package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
	"github.com/actas/actas/storage/sqlstore"
)

func chainEvent(tenant string, i int) storage.AuditEvent {
	return storage.AuditEvent{Time: time.Unix(1_800_000_000+int64(i), 0), TenantID: tenant, ActorType: storage.ActorSystem,
		ActorID: "test", Action: "grant.create", Target: fmt.Sprint(i), Outcome: "success"}
}

// appendingReader is a store in use: each tenant gets one more event just
// after its head was read, and another after its first page was read.
type appendingReader struct {
	storage.Store
	t         *testing.T
	headsRead bool
	paged     map[string]bool
	extras    int
}

func (r *appendingReader) AuditHeads(ctx context.Context) ([]storage.AuditHead, error) {
	heads, err := r.Store.AuditHeads(ctx)
	if !r.headsRead {
		r.headsRead = true
		for _, h := range heads {
			r.add(ctx, h.TenantID)
		}
	}
	return heads, err
}

func (r *appendingReader) AuditChain(ctx context.Context, tenant string, after int64, limit int) ([]storage.AuditEvent, error) {
	evs, err := r.Store.AuditChain(ctx, tenant, after, limit)
	if !r.paged[tenant] {
		r.paged[tenant] = true
		r.add(ctx, tenant)
	}
	return evs, err
}

func (r *appendingReader) add(ctx context.Context, tenant string) {
	r.extras++
	if err := r.Store.AppendAudit(ctx, chainEvent(tenant, 10_000+r.extras)); err != nil {
		r.t.Fatal(err)
	}
}

// Issue 16: verifying a database that is being written to is no false
// tampering alarm; events appended while it runs are verified too.
func runVerifyLive(t *testing.T, open rawOpener) {
	s, _ := open(t)
	ctx := context.Background()
	for _, tenant := range []string{"acme", "globex"} {
		for i := 0; i < 30; i++ {
			if err := s.AppendAudit(ctx, chainEvent(tenant, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := &appendingReader{Store: s, t: t, paged: map[string]bool{}}
	n, err := audit.Verify(ctx, r, testAuditKey, nil)
	if err != nil || n != 60+r.extras || r.extras != 4 {
		t.Fatalf("verify while %d events were appended: %d events, %v; want %d and no error", r.extras, n, err, 60+r.extras)
	}
}

func TestVerifyLiveSQLite(t *testing.T)   { runVerifyLive(t, rawSQLite) }
func TestVerifyLivePostgres(t *testing.T) { runVerifyLive(t, rawPostgres) }

// BenchmarkAuditVerify verifies one tenant's chain of 100,000 events and
// reports events verified per second (issue 16: linear, >= 100k/s).
func BenchmarkAuditVerify(b *testing.B) {
	const events = 100000
	path := filepath.Join(b.TempDir(), "actas.db")
	s, err := sqlstore.Open(context.Background(), "sqlite", path, sqlstore.Options{Migrate: true, AuditKey: testAuditKey})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	batch := make([]storage.AuditEvent, 0, 500)
	for i := 0; i < events; i++ {
		batch = append(batch, chainEvent("acme", i))
		if len(batch) == cap(batch) {
			if err := s.AppendAudit(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, err := audit.Verify(ctx, s, testAuditKey, nil)
		if err != nil || n != events {
			b.Fatalf("%d, %v", n, err)
		}
	}
	b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
}
