package sqlstore_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
	"github.com/actas/actas/storage/sqlstore"
)

// A batch of redemptions is made in a few statements when
// every one succeeds, and one by one, exactly as alone, when any does
// not: each case but the first two has one redemption that must fail, on
// its own.
func TestRedeemBatch(t *testing.T) {
	for _, flavor := range []string{"sqlite", "postgres"} {
		t.Run(flavor, func(t *testing.T) {
			var s storage.Store
			if flavor == "sqlite" {
				s = openSQLite(t)
			} else {
				s = openPostgres(t)
			}
			testRedeemBatch(t, s.(*sqlstore.Store))
		})
	}
}

func testRedeemBatch(t *testing.T, s *sqlstore.Store) {
	ctx := context.Background()
	t0 := time.Now().Truncate(time.Second)
	event := func(tenant, action string) storage.AuditEvent {
		return audit.Event(t0, "", audit.Actor{Type: storage.ActorSystem, ID: "test"}, tenant, action, tenant, audit.Success, nil)
	}
	params := func(tenant, code, engineer string) storage.RedeemParams {
		return storage.RedeemParams{TenantID: tenant, CodeHash: []byte("hash-" + code),
			Engineer: storage.Engineer{Sub: engineer, Iss: "https://support", Email: engineer + "@support", Groups: []string{"support"}},
			Now:      t0, MaxFailures: 3, FailureWindow: time.Hour,
			FailureEvent: event(tenant, "grant.redeem_failed"), LockoutEvent: event(tenant, "tenant.lockout")}
	}
	redeemed := func(g storage.Grant) storage.AuditEvent {
		ev := event(g.TenantID, "grant.redeem")
		ev.Target, ev.Notify = g.ID, storage.NotifyGrantRedeemed
		return ev
	}
	issue := func(jti string) func(storage.Grant, storage.Tenant) (storage.Issue, error) {
		return func(g storage.Grant, _ storage.Tenant) (storage.Issue, error) {
			if jti == "" {
				jti = rand.Text()
			}
			return storage.Issue{
				Token: storage.Token{JTI: jti, GrantID: g.ID, ClientID: "cli", Audience: "product", Role: g.Role, IssuedAt: t0, ExpiresAt: t0.Add(time.Minute)},
				Refresh: &storage.RefreshToken{Hash: []byte(rand.Text()), GrantID: g.ID, ClientID: "cli", Audience: "product", Role: g.Role,
					IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)},
				Events: []storage.AuditEvent{redeemed(g), event(g.TenantID, "token.issue")},
			}, nil
		}
	}
	refused := errors.New("refused by policy")
	taken := rand.Text() // a jti already issued, before the cases
	cases := []struct {
		name string
		odd  func(tenant string) sqlstore.Redemption // one more, or nil
		want func(error) bool                        // its outcome
	}{
		{"all live", nil, nil},
		{"all live, of two tenants", func(tn string) sqlstore.Redemption {
			other := tn + "-b"
			if _, err := s.SetSupportAccess(ctx, storage.Tenant{ID: other, SupportEnabled: true, ChangedBy: "admin", ChangedAt: t0},
				event(other, "support_access.enable"), event(other, "grant.revoke")); err != nil {
				t.Fatal(err)
			}
			n := storage.NotificationSettings{TenantID: other, WebhookURL: "https://hooks.example/" + other,
				Kinds: map[string][]string{storage.ToWebhook: {storage.NotifyGrantRedeemed}}, ChangedBy: "admin", ChangedAt: t0}
			if err := s.SetNotificationSettings(ctx, n, event(other, "notifications.update")); err != nil {
				t.Fatal(err)
			}
			g := storage.Grant{ID: "grt_" + other, TenantID: other, Role: "manage", GrantedBy: "user-1", GrantedByIss: "https://customer",
				GranterClaims: []byte(`{"email":"granter@` + other + `"}`), CreatedAt: t0, ExpiresAt: t0.Add(24 * time.Hour), CodeHash: []byte("hash-100000"), CodeExpiresAt: t0.Add(time.Hour)}
			if err := s.CreateGrant(ctx, g, event(other, "grant.create")); err != nil {
				t.Fatal(err)
			}
			return sqlstore.Redemption{P: params(other, "100000", "eng-x"), Issue: issue("")}
		}, func(err error) bool { return err == nil }},
		{"a wrong code", func(tn string) sqlstore.Redemption {
			return sqlstore.Redemption{P: params(tn, "999999", "eng-x"), Issue: issue("")}
		}, func(err error) bool { var rf *storage.RedeemFailure; return errors.As(err, &rf) }},
		{"a refusal", func(tn string) sqlstore.Redemption {
			return sqlstore.Redemption{P: params(tn, "100003", "eng-x"), Issue: func(storage.Grant, storage.Tenant) (storage.Issue, error) { return storage.Issue{}, refused }}
		}, func(err error) bool { return errors.Is(err, refused) }},
		{"a code twice", func(tn string) sqlstore.Redemption {
			return sqlstore.Redemption{P: params(tn, "100000", "eng-x"), Issue: issue("")}
		}, func(err error) bool { var rf *storage.RedeemFailure; return errors.As(err, &rf) }},
		{"a token id taken", func(tn string) sqlstore.Redemption {
			return sqlstore.Redemption{P: params(tn, "100003", "eng-x"), Issue: issue(taken)}
		}, func(err error) bool { return errors.Is(err, storage.ErrAlreadyExists) }},
		{"a locked-out engineer", func(tn string) sqlstore.Redemption {
			return sqlstore.Redemption{P: params(tn, "100003", "eng-locked"), Issue: issue("")}
		}, func(err error) bool { return errors.Is(err, storage.ErrEngineerLocked) }},
	}
	// eng-locked reaches the failure limit at a tenant that does not
	// exist, so no tenant's own limit is reached with it.
	for range 3 {
		if _, err := s.Redeem(ctx, params("nowhere", "000000", "eng-locked"), issue("")); err == nil {
			t.Fatal("a wrong code redeemed")
		}
	}
	for ci, c := range cases {
		tenant := fmt.Sprintf("acme-%d", ci)
		if _, err := s.SetSupportAccess(ctx, storage.Tenant{ID: tenant, SupportEnabled: true, ChangedBy: "admin", ChangedAt: t0},
			event(tenant, "support_access.enable"), event(tenant, "grant.revoke")); err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			g := storage.Grant{ID: fmt.Sprintf("grt_%d_%d", ci, i), TenantID: tenant, Role: "manage", GrantedBy: "user-1", GrantedByIss: "https://customer",
				GranterClaims: []byte(`{"email":"granter@` + tenant + `"}`), CreatedAt: t0, ExpiresAt: t0.Add(24 * time.Hour), CodeHash: []byte(fmt.Sprintf("hash-10000%d", i)), CodeExpiresAt: t0.Add(time.Hour)}
			if err := s.CreateGrant(ctx, g, event(tenant, "grant.create")); err != nil {
				t.Fatal(err)
			}
		}
		if ci == 0 {
			if _, err := s.Redeem(ctx, params(tenant, "100003", "eng-0"), issue(taken)); err != nil {
				t.Fatal(err)
			}
		}
		// Three live codes, and the odd one second.
		batch := []sqlstore.Redemption{}
		for i := range 3 {
			batch = append(batch, sqlstore.Redemption{P: params(tenant, fmt.Sprintf("10000%d", i), fmt.Sprintf("eng-%d", i)), Issue: issue("")})
		}
		if c.odd != nil {
			batch = append(batch[:1], append([]sqlstore.Redemption{c.odd(tenant)}, batch[1:]...)...)
		}
		claim := func() map[string]int {
			msgs, err := s.ClaimOutbox(ctx, t0.Add(time.Hour), time.Hour, 100)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, m := range msgs {
				got[m.TenantID+" "+m.Channel+" "+m.Kind]++
			}
			return got
		}
		claim()
		gs, errs, together, err := sqlstore.RedeemBatch(s, batch)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		// Each redemption's notices, to each tenant's own recipients.
		want := map[string]int{tenant + " email grant_redeemed": 3}
		if c.odd != nil && c.want(nil) {
			other := batch[1].P.TenantID
			want[other+" email grant_redeemed"], want[other+" webhook grant_redeemed"] = 1, 1
		}
		if got := claim(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: outbox %v, want %v", c.name, got, want)
		}
		wantTogether := 0
		if c.odd == nil || c.want(nil) {
			wantTogether = len(batch)
		}
		if together != wantTogether {
			t.Errorf("%s: %d made together, want %d", c.name, together, wantTogether)
		}
		for i, err := range errs {
			odd := c.odd != nil && i == 1
			switch {
			case odd && !c.want(err):
				t.Errorf("%s: the odd one: %v", c.name, err)
			case !odd && err != nil:
				t.Errorf("%s: redemption %d: %v", c.name, i, err)
			case err == nil && (gs[i].RedeemedAt.IsZero() || gs[i].EngineerSub != batch[i].P.Engineer.Sub):
				t.Errorf("%s: redemption %d returned %+v", c.name, i, gs[i])
			}
		}
		evs, err := s.Audit(ctx, storage.AuditFilter{TenantID: tenant, Action: "token.issue", Limit: 100})
		issued := 3
		if ci == 0 {
			issued++ // and taken's
		}
		if err != nil || len(evs) != issued {
			t.Errorf("%s: %d token.issue events (%v), want %d", c.name, len(evs), err, issued)
		}
		if c.odd != nil {
			// Nothing of a failed one was left behind: the fourth code is
			// still live.
			if _, err := s.Redeem(ctx, params(tenant, "100003", "eng-9"), issue("")); err != nil {
				t.Errorf("%s: the fourth code after the batch: %v", c.name, err)
			}
		}
	}
	if _, err := audit.Verify(ctx, s, []byte("0123456789abcdef0123456789abcdef"), nil); err != nil {
		t.Fatalf("chain: %v", err)
	}
}
