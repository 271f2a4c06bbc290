package broker

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

func TestIntrospectionAudit(t *testing.T) {
	e := newTestEnv(t)
	clock := time.Now()
	e.clock = func() time.Time { return clock }
	admin := e.admin(t)
	e.enable(t, admin)
	tok := e.redeem(t, admin, e.engineer(t))
	for i := 0; i < 5; i++ {
		if w := e.post(t, "/introspect", url.Values{"token": {tok}}, "product", testProductSecret); w.Code != 200 {
			t.Fatalf("introspect: %d", w.Code)
		}
	}
	evs, _ := e.store.Audit(context.Background(), storage.AuditFilter{TenantID: "acme", Action: "token.introspect"})
	if len(evs) != 1 || evs[0].ActorType != storage.ActorClient || evs[0].ActorID != "product" {
		t.Fatalf("first-use events: %+v", evs)
	}
	var d map[string]any
	json.Unmarshal(evs[0].Detail, &d)
	if d["first_use"] != true || d["sub"] != "ada" || d["act"] != "alice" {
		t.Fatalf("first-use detail names sub and act: %v", d)
	}
	e.srv.Core().FlushUsage(context.Background(), false) // same hour: nothing yet
	clock = clock.Add(time.Hour)
	e.srv.Core().FlushUsage(context.Background(), false)
	evs, _ = e.store.Audit(context.Background(), storage.AuditFilter{TenantID: "acme", Action: "token.introspect"})
	if len(evs) != 2 {
		t.Fatalf("after the hour: %d introspection events, want first use + one summary", len(evs))
	}
	json.Unmarshal(evs[0].Detail, &d)
	if d["summary"] != true || d["count"].(float64) != 5 || d["act"] != "alice" {
		t.Fatalf("summary: %v", d)
	}
	if n, err := audit.Verify(context.Background(), e.store, e.secrets.AuditKey(), nil); err != nil || n == 0 {
		t.Fatalf("chain: %d %v", n, err)
	}
}

func TestMaintenanceCheckpointsAndRetention(t *testing.T) {
	e := newTestEnv(t)
	clock := time.Now()
	e.clock = func() time.Time { return clock }
	admin := e.admin(t)
	e.enable(t, admin)
	e.redeem(t, admin, e.engineer(t))
	e.srv.Core().MaybeRetain(context.Background())
	cps, _, err := e.store.AuditCheckpoints(context.Background())
	if err != nil || len(cps) != 1 {
		t.Fatalf("checkpoints: %d %v", len(cps), err)
	}
	e.srv.Core().MaybeRetain(context.Background()) // within the hour: nothing
	clock = clock.Add(100 * 24 * time.Hour)
	e.srv.Core().RecordExpiries(context.Background())
	e.srv.Core().MaybeRetain(context.Background())
	if cps, _, _ = e.store.AuditCheckpoints(context.Background()); len(cps) != 2 {
		t.Fatalf("checkpoints after a day: %d", len(cps))
	}
	if g, _ := e.store.Grants(context.Background(), storage.GrantFilter{TenantID: "acme", Status: "all", Now: clock}); len(g) != 0 {
		t.Fatalf("grants ended 100 days ago were not archived: %d", len(g))
	}
	checkSig, err := audit.CheckpointVerifier(context.Background(), e.store)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(context.Background(), e.store, e.secrets.AuditKey(), checkSig); err != nil {
		t.Fatal(err)
	}
	// A signature from another key (or none) is refused.
	cps, _, _ = e.store.AuditCheckpoints(context.Background())
	forged := cps[0]
	forged.Signature = ""
	if checkSig(forged) == nil {
		t.Fatal("an unsigned checkpoint passed")
	}
	forged.Hash = append([]byte(nil), cps[1].Hash...)
	forged.Signature = cps[0].Signature
	if checkSig(forged) == nil {
		t.Fatal("a signature was accepted for another checkpoint")
	}
}
