package sqlstore_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/actas/actas/storage"
)

// BenchmarkRedeem measures redemptions from 64 concurrent callers over 8
// tenants, each writing what a token exchange writes: the grant's binding,
// an access and a refresh token and two chained audit events, durably.
// ns/op is wall time per redemption at that concurrency, so 1e9/ns is the
// storage layer's redemptions per second.
func BenchmarkRedeem(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchRedeem(b, openSQLite(b)) })
	b.Run("postgres", func(b *testing.B) { benchRedeem(b, openPostgres(b)) })
}

func benchRedeem(b *testing.B, s storage.Store) {
	ctx := context.Background()
	now := time.Now().UTC()
	event := func(tenant, action, target string) storage.AuditEvent {
		return storage.AuditEvent{Time: now, TenantID: tenant, ActorType: storage.ActorSupportEngineer, ActorID: "eng",
			Action: action, Target: target, Outcome: "success", Detail: []byte(`{"role":"manage"}`)}
	}
	const tenants = 8
	tenant := func(i int) string { return fmt.Sprintf("bench-%d", i%tenants) }
	for i := range tenants {
		if _, err := s.SetSupportAccess(ctx, storage.Tenant{ID: tenant(i), SupportEnabled: true, ChangedBy: "admin", ChangedAt: now},
			event(tenant(i), "support_access.enable", tenant(i)), event(tenant(i), "grant.revoke", tenant(i))); err != nil {
			b.Fatal(err)
		}
	}
	// As in production: grant IDs and jtis are time-ordered, code and
	// refresh-token hashes are random.
	code := func(i int) []byte { h := sha256.Sum256(fmt.Appendf(nil, "code-%d", i)); return h[:] }
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < b.N; i += 16 {
				g := storage.Grant{ID: fmt.Sprintf("grt_%012d", i), TenantID: tenant(i), Role: "manage", Environments: []string{"production"},
					GrantedBy: "user-1", GrantedByIss: "https://customer", GranterRole: "admin", GranterClaims: []byte(`{"email":"ada@example.com"}`),
					CreatedAt: now, ExpiresAt: now.Add(time.Hour), CodeHash: code(i), CodeExpiresAt: now.Add(time.Hour)}
				if err := s.CreateGrant(ctx, g, event(g.TenantID, "grant.create", g.ID)); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	redeemed := func(g storage.Grant) storage.AuditEvent {
		ev := event(g.TenantID, "grant.redeem", g.ID)
		ev.Notify = storage.NotifyGrantRedeemed // the granter hears of it
		return ev
	}
	var next atomic.Int64
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1) - 1)
			p := storage.RedeemParams{TenantID: tenant(i), CodeHash: code(i), Now: now, MaxFailures: 10, FailureWindow: time.Hour,
				Engineer:     storage.Engineer{Sub: "eng", Iss: "https://support", Email: "eng@support", Groups: []string{"support"}},
				FailureEvent: event(tenant(i), "grant.redeem_failed", ""), LockoutEvent: event(tenant(i), "tenant.lockout", "")}
			_, err := s.Redeem(ctx, p, func(g storage.Grant, _ storage.Tenant) (storage.Issue, error) {
				jti := fmt.Sprintf("jti_%012d", i)
				refresh := sha256.Sum256([]byte(jti))
				return storage.Issue{
					Token: storage.Token{JTI: jti, GrantID: g.ID, ClientID: "cli", Audience: "product", Role: g.Role, Scope: "read",
						IssuedAt: now, ExpiresAt: now.Add(15 * time.Minute)},
					Refresh: &storage.RefreshToken{Hash: refresh[:], GrantID: g.ID, ClientID: "cli", Audience: "product",
						Role: g.Role, Scope: "read", IssuedAt: now, ExpiresAt: now.Add(12 * time.Hour)},
					Events: []storage.AuditEvent{redeemed(g), event(g.TenantID, "token.issue", jti)},
				}, nil
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}
