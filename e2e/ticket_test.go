package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

const ticketSecret = "ticket-hook-secret-0123456789abcdef"

func (s *server) hook(t *testing.T, body string, ts time.Time, secret string) resp {
	t.Helper()
	stamp := strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(stamp + "." + body))
	req, _ := http.NewRequest("POST", s.base+"/hooks/tickets", bytes.NewReader([]byte(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Actas-Timestamp", stamp)
	req.Header.Set("X-Actas-Signature", "sha256="+hex.EncodeToString(m.Sum(nil)))
	return do(t, req)
}

func TestTicketHook(t *testing.T) {
	cust, sup := startIDP(t), startIDP(t)
	dir := t.TempDir()
	listen := freePort(t)
	cfg := writeConfig(t, dir, listen, "sqlite://"+filepath.Join(dir, "actas.db"), cust, sup, testPolicy)
	f, _ := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("ticket_hook: {secret_env: ACTAS_TICKET_SECRET, max_age: 5m}\n")
	f.Close()
	fx := &fixture{server: startServer(t, cfg, listen, "ACTAS_TICKET_SECRET="+ticketSecret), cust: cust, sup: sup}

	admin := fx.admin(t, "acme")
	fx.enable(t, "acme", admin, false)
	redeem := func(ticket any) (string, string) {
		id, code := fx.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}, "ticket": ticket})
		tr := fx.exchange(t, "acme", code, fx.engineer(t, "eng-t"))
		if tr.status != 200 {
			t.Fatalf("exchange: %s", tr.raw)
		}
		return id, tr.str("access_token")
	}
	zd7, tok7 := redeem(map[string]any{"id": "ZD-7", "system": "zendesk", "severity": "S2"})
	_, tok8 := redeem("ZD-8")
	if r := fx.api(t, "POST", "/api/v1/tenants/acme/grants", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"},
		"ticket": map[string]any{"id": "ZD-9", "severity": "P0"}}); r.status != 400 {
		t.Fatalf("bad severity: %d %s", r.status, r.raw)
	}
	before := snapshot(t, fx, admin)

	solved := `{"tenant":"acme","ticket":{"id":"ZD-7","system":"zendesk"},"status":"Solved"}`
	now := time.Now()
	for name, r := range map[string]resp{
		"bad signature":    fx.hook(t, solved, now, "wrong-secret-wrong-secret-wrong-secret"),
		"old timestamp":    fx.hook(t, solved, now.Add(-10*time.Minute), ticketSecret),
		"future timestamp": fx.hook(t, solved, now.Add(10*time.Minute), ticketSecret),
	} {
		if r.status != 401 || r.str("error") != "unauthorized" {
			t.Fatalf("%s: %d %s", name, r.status, r.raw)
		}
	}
	if after := snapshot(t, fx, admin); after != before || !fx.active(t, tok7) {
		t.Fatal("a rejected hook call changed something")
	}
	if r := fx.hook(t, `{"tenant":"acme","ticket":"ZD-7","status":"Reopened"}`, now, ticketSecret); r.status != 400 {
		t.Fatalf("unknown status: %d", r.status)
	}
	if r := fx.hook(t, `{"tenant":"acme","ticket":"ZD-7","status":"Awaiting reply"}`, now, ticketSecret); r.status != 200 || !fx.active(t, tok7) {
		t.Fatalf("a non-final status: %d %s", r.status, r.raw)
	}

	r := fx.hook(t, solved, now, ticketSecret)
	if r.status != 200 || len(r.body["ended_grants"].([]any)) != 1 || r.body["ended_grants"].([]any)[0] != zd7 {
		t.Fatalf("solved: %d %s", r.status, r.raw)
	}
	if fx.active(t, tok7) {
		t.Fatal("the token of a solved ticket's grant is still active")
	}
	if !fx.active(t, tok8) {
		t.Fatal("another ticket's grant ended")
	}
	if r := fx.hook(t, solved, now, ticketSecret); r.status != 409 {
		t.Fatalf("replay: %d %s", r.status, r.raw)
	}
	a := fx.api(t, "GET", "/api/v1/tenants/acme/audit?action=grant.revoke", admin, nil)
	evs := a.body["events"].([]any)
	ev := evs[0].(map[string]any)
	d := ev["detail"].(map[string]any)
	if len(evs) != 1 || ev["actor_type"] != "system" || ev["target"] != zd7 || d["ticket"] != "ZD-7" || d["reason"] != "ticket_solved" || d["act"] != "eng-t" {
		t.Fatalf("audit of the ticket revoke: %s", a.raw)
	}
}
