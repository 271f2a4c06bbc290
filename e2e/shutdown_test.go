package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"

	"github.com/actas/actas/broker/keys"
	"github.com/actas/actas/broker/secrets"
	"github.com/actas/actas/claims"
	"github.com/actas/actas/storage/sqlstore"
)

// TestShutdownFlushesUsage (issue 15, defect 4): after 50,000 distinct
// tokens were introspected, SIGTERM writes every count to the audit log,
// exits 0, and does so in under 15 s.
func TestShutdownFlushesUsage(t *testing.T) {
	if testing.Short() {
		t.Skip("50,000 introspections")
	}
	const n = 50000
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	_, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"sandbox"}, "expires_in": 3600})
	tr := f.exchange(t, "acme", code, f.engineer(t, "alice"))
	if tr.status != 200 {
		t.Fatalf("exchange: %s", tr.raw)
	}
	seed := f.introspect(t, tr.str("access_token"))
	f.stop(t)

	tokens := mintTokens(t, filepath.Join(f.dir, "actas.db"), seed, n)
	f.start(t)

	var active, other atomic.Int64
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < n; i = next.Add(1) - 1 {
				r := f.form(t, "/introspect", url.Values{"token": {tokens[i]}}, "product", productSecret)
				if r.status == 200 && r.body["active"] == true {
					active.Add(1)
				} else {
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if active.Load() != n {
		t.Fatalf("%d of %d introspections active (%d not)", active.Load(), n, other.Load())
	}

	start := time.Now()
	f.stop(t) // fails the test unless the exit status is 0 within 25 s
	took := time.Since(start)
	if took > 15*time.Second {
		t.Fatalf("shutdown took %s, want under 15s", took)
	}
	db, err := sqlx.Open("sqlite", filepath.Join(f.dir, "actas.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var summaries, counted int
	if err := db.Get(&summaries, `SELECT COUNT(*) FROM audit_events WHERE action = 'token.introspect' AND detail LIKE '%"summary":true%'`); err != nil {
		t.Fatal(err)
	}
	if err := db.Get(&counted, `SELECT COALESCE(SUM(json_extract(detail, '$.count')), 0) FROM audit_events WHERE action = 'token.introspect' AND detail LIKE '%"summary":true%'`); err != nil {
		t.Fatal(err)
	}
	// n tokens introspected once each, plus the seed token's summary,
	// written at the first shutdown.
	if summaries != n+1 || counted != n+1 {
		t.Fatalf("audit has %d summaries counting %d introspections, want %d and %d", summaries, counted, n+1, n+1)
	}
	t.Logf("shutdown after %d distinct introspected tokens: %s, %d summaries in the audit", n, took.Round(time.Millisecond), summaries)
}

// mintTokens writes n access tokens like the seed (the introspection of
// a real one) into the stopped server's database, already used so that
// introspection writes no first-use event, and signs them with the
// server's own key, loaded through the project's own key manager.
func mintTokens(t *testing.T, dbPath string, seed resp, n int) []string {
	t.Helper()
	var base claims.Claims
	if err := json.Unmarshal(seed.raw, &base); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	secret, err := secrets.LoadRoot("", dbPath+".secret", "")
	if err != nil {
		t.Fatal(err)
	}
	sk, err := secrets.Derive(secret)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.Open(ctx, "sqlite", dbPath, sqlstore.Options{AuditKey: sk.AuditKey()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := keys.New(ctx, keys.Config{Store: st, KEK: sk.KEK(), Algorithm: "ES256"})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqlx.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx := db.MustBegin()
	ks := m.KeySet()
	tokens := make([]string, n)
	for i := range tokens {
		c := base
		c.Jti = fmt.Sprintf("load-%06d", i)
		if _, err := tx.Exec(`INSERT INTO tokens (jti, grant_id, client_id, audience, role, scope, issued_at, expires_at, first_used_at)
			SELECT ?, grant_id, client_id, audience, role, scope, issued_at, expires_at, issued_at FROM tokens WHERE jti = ?`, c.Jti, base.Jti); err != nil {
			t.Fatal(err)
		}
		if tokens[i], err = ks.Sign(&c); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return tokens
}
