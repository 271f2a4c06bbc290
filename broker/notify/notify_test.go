package notify

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/config"
	"github.com/actas/actas/storage"
	"github.com/actas/actas/storage/sqlstore"
)

func TestWebhookRefusesNonPublicAddresses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	if _, err := webhookClient(false).Post(srv.URL, "application/json", strings.NewReader("{}")); err == nil || !strings.Contains(err.Error(), "non-public") {
		t.Fatalf("loopback webhook without permission: %v", err)
	}
	resp, err := webhookClient(true).Post(srv.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("loopback webhook with permission: %v", err)
	}
	resp.Body.Close()
	for _, private := range []string{"http://10.0.0.1:1/x", "http://192.168.1.1:1/x", "http://169.254.169.254/latest/meta-data", "http://[fd00::1]:1/x",
		// Issue 15: shared address space, "this network", benchmarking,
		// reserved and NAT64, which net.IP's predicates do not cover.
		"http://100.64.0.1:1/x", "http://0.1.2.3:1/x", "http://198.18.0.1:1/x", "http://240.0.0.1:1/x", "http://[64:ff9b::a00:1]:1/x"} {
		if _, err := webhookClient(true).Post(private, "application/json", strings.NewReader("{}")); err == nil || !strings.Contains(err.Error(), "non-public") {
			t.Fatalf("%s: %v", private, err)
		}
	}
}

// Issue 9: a message that cannot be delivered is retried MaxAttempts
// times, then dead-lettered: out of the backlog, audited in the tenant's
// chain, counted; never retried forever.
func TestDeadLetterAfterMaxAttempts(t *testing.T) {
	ctx := context.Background()
	key := []byte("0123456789abcdef0123456789abcdef")
	st, err := sqlstore.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "actas.db"), sqlstore.Options{Migrate: true, AuditKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clock := time.Now()
	now := func() time.Time { return clock }
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String() + "/hook" // nothing listens once closed
	ln.Close()
	admin := audit.Actor{Type: storage.ActorTenantAdmin, ID: "ada"}
	if err := st.SetNotificationSettings(ctx, storage.NotificationSettings{TenantID: "acme", WebhookURL: closed,
		Kinds: storage.DefaultNotifyKinds(), ChangedAt: clock}, audit.Event(clock, "", admin, "acme", audit.NotificationsUpdate, "acme", audit.Success, nil)); err != nil {
		t.Fatal(err)
	}
	if err := st.AppendAudit(ctx, audit.Event(clock, "", admin, "acme", audit.SupportEnable, "acme", audit.Success, nil)); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	w := New(Config{Store: st, Notifications: config.Notifications{WebhookSecret: string(key), AllowLoopbackWebhooks: true}, Now: now, Registry: reg})
	for attempt := 1; attempt <= MaxAttempts+3; attempt++ {
		msgs, err := st.ClaimOutbox(ctx, clock, time.Minute, 10)
		if err != nil {
			t.Fatal(err)
		}
		if attempt > MaxAttempts {
			if len(msgs) != 0 {
				t.Fatalf("attempt %d: a dead-lettered message was claimed again", attempt)
			}
			continue
		}
		if len(msgs) != 1 {
			t.Fatalf("attempt %d: %d messages due, want 1", attempt, len(msgs))
		}
		w.deliver(ctx, msgs[0])
		clock = clock.Add(2 * time.Hour) // past any backoff
	}
	if n, _ := st.OutboxBacklog(ctx); n != 0 {
		t.Fatalf("backlog %d after dead-lettering", n)
	}
	evs, _ := st.Audit(ctx, storage.AuditFilter{TenantID: "acme", Action: audit.NotificationDead, Limit: 10})
	if len(evs) != 1 {
		t.Fatalf("%d dead-letter audit events, want 1", len(evs))
	}
	if got := testutil.ToFloat64(w.dead.WithLabelValues("webhook")); got != 1 {
		t.Fatalf("dead letters counted: %v", got)
	}
}
