package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// mailbox is an SMTP server (go-smtp) on loopback that keeps what it gets.
type mailbox struct {
	mu   sync.Mutex
	msgs []mailMsg
	addr string
}

type mailMsg struct {
	to   []string
	data string
}

type mbBackend struct{ mb *mailbox }

func (b mbBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &mbSession{mb: b.mb}, nil }

type mbSession struct {
	mb *mailbox
	to []string
}

func (s *mbSession) Reset()                                    { s.to = nil }
func (s *mbSession) Logout() error                             { return nil }
func (s *mbSession) Mail(string, *smtp.MailOptions) error      { return nil }
func (s *mbSession) Rcpt(to string, _ *smtp.RcptOptions) error { s.to = append(s.to, to); return nil }
func (s *mbSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mb.mu.Lock()
	s.mb.msgs = append(s.mb.msgs, mailMsg{to: s.to, data: string(b)})
	s.mb.mu.Unlock()
	return nil
}

func startMailbox(t *testing.T) *mailbox {
	mb := &mailbox{}
	srv := smtp.NewServer(mbBackend{mb})
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mb.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return mb
}

// smtpConfig is the notifications section that sends mail to mb.
func (mb *mailbox) smtpConfig() string {
	host, port, _ := net.SplitHostPort(mb.addr)
	return "notifications:\n  smtp: {host: " + host + ", port: " + port + ", from: actas@support.example, tls: none}\n"
}

func (mb *mailbox) all() []mailMsg {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return append([]mailMsg(nil), mb.msgs...)
}

const webhookSecret = "webhook-secret-0123456789abcdef0123"

func TestNotifications(t *testing.T) {
	mb := startMailbox(t)
	var up atomic.Bool
	var mu sync.Mutex
	deliveries := map[string]int{}
	var payloads []map[string]any
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte(webhookSecret))
		m.Write([]byte(r.Header.Get("X-Actas-Timestamp") + "."))
		m.Write(body)
		if r.Header.Get("X-Actas-Signature") != "sha256="+hex.EncodeToString(m.Sum(nil)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var p map[string]any
		json.Unmarshal(body, &p)
		mu.Lock()
		deliveries[r.Header.Get("X-Actas-Delivery")]++
		payloads = append(payloads, p)
		mu.Unlock()
	}))
	defer receiver.Close()

	cust, sup := startIDP(t), startIDP(t)
	dir := t.TempDir()
	listen := freePort(t)
	cfg := writeConfig(t, dir, listen, "sqlite://"+filepath.Join(dir, "actas.db"), cust, sup, testPolicy)
	host, port, _ := net.SplitHostPort(mb.addr)
	f, _ := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("notifications:\n  smtp: {host: " + host + ", port: " + port + ", from: actas@support.example, tls: none}\n  webhook_secret_env: ACTAS_WEBHOOK_SECRET\n  allow_loopback_webhooks: true\n")
	f.Close()
	fx := &fixture{server: startServer(t, cfg, listen, "ACTAS_WEBHOOK_SECRET="+webhookSecret), cust: cust, sup: sup}

	ada := fx.cust.token(t, &testUser{Sub: "ada", OrgID: "acme", Role: "admin", Email: "ada@acme.example"})
	bob := fx.cust.token(t, &testUser{Sub: "bob", OrgID: "acme", Role: "admin", Email: "bob@acme.example"})
	fx.api(t, "GET", "/api/v1/tenants/acme/support-access", bob, nil) // actas learns bob's address from his token
	fx.enable(t, "acme", ada, false)

	// The toggle reaches every admin: who, what, when.
	deadline := time.Now().Add(10 * time.Second)
	for len(mb.all()) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	got := map[string]string{}
	for _, m := range mb.all() {
		for _, to := range m.to {
			got[to] = m.data
		}
	}
	for _, admin := range []string{"ada@acme.example", "bob@acme.example"} {
		d := got[admin]
		if !strings.Contains(d, "support access changed") || !strings.Contains(d, "Who:  tenant_admin ada") ||
			!strings.Contains(d, "When: ") || !strings.Contains(d, "support_access.enable") {
			t.Fatalf("toggle mail to %s:\n%s", admin, d)
		}
	}

	// Webhook for grant creation; the receiver is down, then actas
	// restarts, then the receiver comes back: delivered exactly once.
	kinds := map[string]any{"admins": []string{"grant_created"}, "webhook": []string{"grant_created"}}
	if r := fx.api(t, "PUT", "/api/v1/tenants/acme/notifications", ada, map[string]any{
		"webhook_url": receiver.URL + "/actas", "kinds": kinds}); r.status != 200 {
		t.Fatalf("settings: %d %s", r.status, r.raw)
	}
	for _, bad := range []map[string]any{{"admins": []string{"everything"}}, {"pagers": []string{"toggle"}}} {
		if r := fx.api(t, "PUT", "/api/v1/tenants/acme/notifications", ada, map[string]any{"kinds": bad}); r.status != 422 {
			t.Fatalf("bad kinds %v: %d", bad, r.status)
		}
	}
	r := fx.api(t, "GET", "/api/v1/tenants/acme/notifications", bob, nil)
	if got := r.body["kinds"].(map[string]any); r.status != 200 || len(got["admins"].([]any)) != 2 || got["admins"].([]any)[0] != "toggle" {
		t.Fatalf("settings read back: %s", r.raw)
	}
	id, _ := fx.grant(t, "acme", ada, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
	time.Sleep(1500 * time.Millisecond) // a failed attempt or two against the down receiver
	fx.stop(t)
	fx.start(t)
	up.Store(true)
	deadline = time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(payloads)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // would a second copy arrive?
	mu.Lock()
	defer mu.Unlock()
	if len(payloads) != 1 || payloads[0]["kind"] != "grant_created" || payloads[0]["target"] != id || payloads[0]["actor_id"] != "ada" {
		t.Fatalf("webhook deliveries: %v", payloads)
	}
	for d, n := range deliveries {
		if n != 1 {
			t.Fatalf("delivery %s arrived %d times", d, n)
		}
	}
	// Mail: the toggle and the grant to each admin, once each.
	count := map[string]int{}
	for _, m := range mb.all() {
		kind := "toggle"
		if strings.Contains(m.data, "support access granted") {
			kind = "granted"
		}
		for _, to := range m.to {
			count[to+" "+kind]++
		}
	}
	want := map[string]int{"ada@acme.example toggle": 1, "bob@acme.example toggle": 1, "ada@acme.example granted": 1, "bob@acme.example granted": 1}
	if len(count) != len(want) {
		t.Fatalf("mails: %v", count)
	}
	for k, n := range want {
		if count[k] != n {
			t.Fatalf("mails: %v, want %v", count, want)
		}
	}
}

// The granting user, admin or not, is told by mail when their grant is
// redeemed and when it ends (the tenant's settings are for admins).
func TestGranterIsTold(t *testing.T) {
	mb := startMailbox(t)
	f := newFixtureWith(t, testPolicy, mb.smtpConfig())
	f.enable(t, "acme", f.admin(t, "acme"), true)
	mem := f.cust.token(t, &testUser{Sub: "mem", OrgID: "acme", Role: "manage", Plan: "enterprise", Email: "mem@acme.example"})
	id, code := f.grant(t, "acme", mem, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
	if tr := f.exchange(t, "acme", code, f.engineer(t, "eng-told")); tr.status != 200 {
		t.Fatalf("exchange: %s", tr.raw)
	}
	if r := f.api(t, "DELETE", "/api/v1/tenants/acme/grants/"+id, mem, nil); r.status != 204 {
		t.Fatalf("terminate: %d", r.status)
	}
	var subjects []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		subjects = nil
		for _, m := range mb.all() {
			if slices.Contains(m.to, "mem@acme.example") {
				subjects = append(subjects, m.data)
			}
		}
		if len(subjects) >= 2 {
			break
		}
	}
	joined := strings.Join(subjects, "\n")
	if len(subjects) != 2 || !strings.Contains(joined, "redeemed a grant") || !strings.Contains(joined, "a support grant ended") {
		t.Fatalf("mail to the granter: %d messages\n%s", len(subjects), joined)
	}
}
