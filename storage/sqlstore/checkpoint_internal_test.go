package sqlstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/actas/actas/storage"
)

// Under steady writes with reads always in flight, the WAL starts over
// once it is walRestartFrames long instead of growing without bound.
func TestWALStartsOverUnderLoad(t *testing.T) {
	defer func(n int) { walRestartFrames = n }(walRestartFrames)
	walRestartFrames = 512
	path := filepath.Join(t.TempDir(), "actas.db")
	s, err := Open(context.Background(), "sqlite", path, Options{Migrate: true, AuditKey: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, stop := context.WithCancel(context.Background())
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for ctx.Err() == nil {
				var n int
				s.read.GetContext(ctx, &n, `SELECT COUNT(*) FROM audit_events WHERE tenant_id = 'acme' AND seq > 0`)
			}
		})
	}
	// 600 commits of ten 3 KB events: some 6,000 WAL frames, 24 MB.
	evs := make([]storage.AuditEvent, 10)
	for i := range evs {
		evs[i] = storage.AuditEvent{Time: time.Now(), TenantID: "acme", ActorType: storage.ActorTenantAdmin, ActorID: "ada",
			Action: "grant.create", Target: "grt_1", Outcome: "success", Detail: []byte(`{"pad":"` + strings.Repeat("x", 3000) + `"}`)}
	}
	var largest int64
	for range 600 {
		if err := s.AppendAudit(context.Background(), evs...); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path + "-wal"); err == nil {
			largest = max(largest, fi.Size())
		}
	}
	stop()
	readers.Wait()
	const frame = 4096 + 24
	if limit := int64(4 * walRestartFrames * frame); largest > limit {
		t.Fatalf("the WAL grew to %d bytes (%d frames) with a restart at %d frames", largest, largest/frame, walRestartFrames)
	}
}
