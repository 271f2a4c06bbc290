package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

func testTenantToggle(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if _, err := s.Tenant(ctx, "acme"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("unknown tenant: got %v, want ErrNotFound", err)
	}
	enable(t, s, "acme")
	tn, err := s.Tenant(ctx, "acme")
	if err != nil || !tn.SupportEnabled || tn.AllowNonAdminGrants || tn.ChangedBy != "admin" || !tn.ChangedAt.Equal(t0) {
		t.Fatalf("tenant = %+v, %v", tn, err)
	}
	if _, err := s.SetSupportAccess(ctx, storage.Tenant{ID: "acme", SupportEnabled: true, AllowNonAdminGrants: true, ChangedBy: "b", ChangedAt: t0.Add(time.Minute)}, ev("acme", "support_access.update"), ev("acme", "grant.revoke")); err != nil {
		t.Fatal(err)
	}
	tn, _ = s.Tenant(ctx, "acme")
	if !tn.AllowNonAdminGrants || tn.ChangedBy != "b" {
		t.Fatalf("update not stored: %+v", tn)
	}

	// The first issuer to set a tenant binds it; another is refused and
	// changes nothing, audit included.
	bind := func(iss string, on bool) error {
		_, err := s.SetSupportAccess(ctx, storage.Tenant{ID: "bound", SupportEnabled: on, ChangedBy: "x", ChangedAt: t0, Issuer: iss},
			ev("bound", "support_access.enable"), ev("bound", "grant.revoke"))
		return err
	}
	if err := bind("https://idp-a", true); err != nil {
		t.Fatal(err)
	}
	if err := bind("https://idp-b", false); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("another issuer: %v, want ErrConflict", err)
	}
	if tn, _ := s.Tenant(ctx, "bound"); !tn.SupportEnabled || tn.Issuer != "https://idp-a" || auditCount(t, s, "bound", "support_access.enable") != 1 {
		t.Fatalf("after a refused toggle: %+v", tn)
	}
	if err := bind("https://idp-a", false); err != nil {
		t.Fatal(err)
	}
}

func testGrantRequiresSupport(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if err := s.CreateGrant(ctx, newGrant("acme", "111111"), ev("acme", "grant.create")); !errors.Is(err, storage.ErrSupportOff) {
		t.Fatalf("unknown tenant: got %v, want ErrSupportOff", err)
	}
	enable(t, s, "acme")
	s.SetSupportAccess(ctx, storage.Tenant{ID: "acme", SupportEnabled: false, ChangedBy: "a", ChangedAt: t0}, ev("acme", "support_access.disable"), ev("acme", "grant.revoke"))
	if err := s.CreateGrant(ctx, newGrant("acme", "111111"), ev("acme", "grant.create")); !errors.Is(err, storage.ErrSupportOff) {
		t.Fatalf("disabled tenant: got %v, want ErrSupportOff", err)
	}
	n := auditCount(t, s, "acme", "grant.create")
	if n != 0 {
		t.Fatalf("refused grants left %d audit events", n)
	}
}

func testCodeCollision(t *testing.T, s storage.Store) {
	enable(t, s, "acme")
	enable(t, s, "other")
	mustCreate(t, s, newGrant("acme", "123456"))
	err := s.CreateGrant(context.Background(), newGrant("acme", "123456"), ev("acme", "grant.create"))
	if !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("same live code: got %v, want ErrAlreadyExists", err)
	}
	mustCreate(t, s, newGrant("other", "123456")) // another tenant may hold the same code
}

// testConcurrentGrants races grants of one tenant, five of which collide
// on a code, with redemptions: storage group-commits them, and a collision
// must fail that grant alone.
func testConcurrentGrants(t *testing.T, s storage.Store, key []byte) {
	ctx := context.Background()
	enable(t, s, "acme")
	mustCreate(t, s, newGrant("acme", "700000"))
	const n, redemptions = 32, 8
	for i := range redemptions {
		mustCreate(t, s, newGrant("acme", fmt.Sprintf("71%04d", i)))
	}
	var created, collided atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		code := fmt.Sprintf("72%04d", i)
		switch {
		case i == 0:
			code = "700000" // a live code
		case i%8 == 1:
			code = "799999" // four race for it: one wins
		}
		wg.Go(func() {
			err := s.CreateGrant(ctx, newGrant("acme", code), ev("acme", "grant.create"))
			switch {
			case err == nil:
				created.Add(1)
			case errors.Is(err, storage.ErrAlreadyExists):
				collided.Add(1)
			default:
				t.Errorf("grant %d: %v", i, err)
			}
		})
		if i < redemptions {
			wg.Go(func() {
				if _, err := s.Redeem(ctx, redeemParams("acme", fmt.Sprintf("71%04d", i), "eng-1", t0), issueFor("cli", t0)); err != nil {
					t.Errorf("redeem %d: %v", i, err)
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if created.Load() != n-4 || collided.Load() != 4 {
		t.Fatalf("%d grants created and %d collided, want %d and 4", created.Load(), collided.Load(), n-4)
	}
	if c := auditCount(t, s, "acme", "grant.create"); c != 1+redemptions+n-4 {
		t.Fatalf("%d grant.create events, want %d", c, 1+redemptions+n-4)
	}
	if c := auditCount(t, s, "acme", "grant.redeem"); c != redemptions {
		t.Fatalf("%d grant.redeem events, want %d", c, redemptions)
	}
	if _, err := audit.Verify(ctx, s, key, nil); err != nil {
		t.Fatalf("chain: %v", err)
	}
}

func testGrantList(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	a := mustCreate(t, s, newGrant("acme", "000001"))
	b := newGrant("acme", "000002")
	b.GrantedBy = "user-2"
	b.CreatedAt = t0.Add(time.Second)
	mustCreate(t, s, b)
	c := newGrant("acme", "000003")
	c.CreatedAt = t0.Add(2 * time.Second)
	mustCreate(t, s, c)
	if _, err := s.RevokeGrant(ctx, "acme", c.ID, t0, "user-1", "terminated", ev("acme", "grant.revoke")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    storage.GrantFilter
		want []string
	}{
		{storage.GrantFilter{TenantID: "acme", Status: "all", Now: t0}, []string{c.ID, b.ID, a.ID}},
		{storage.GrantFilter{TenantID: "acme", Status: "active", Now: t0}, []string{b.ID, a.ID}},
		{storage.GrantFilter{TenantID: "acme", Status: "inactive", Now: t0}, []string{c.ID}},
		{storage.GrantFilter{TenantID: "acme", GrantedBy: "user-2", Status: "all", Now: t0}, []string{b.ID}},
		// after the codes' window every unredeemed grant is inactive
		{storage.GrantFilter{TenantID: "acme", Status: "active", Now: t0.Add(2 * time.Hour)}, nil},
		{storage.GrantFilter{TenantID: "other", Status: "all", Now: t0}, nil},
	} {
		got, err := s.Grants(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, g := range got {
			ids = append(ids, g.ID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(tc.want) {
			t.Errorf("%+v: got %v, want %v", tc.f, ids, tc.want)
		}
	}
	g, err := s.Grant(ctx, "acme", a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if g.Role != "manage" || fmt.Sprint(g.Environments) != "[production]" || fmt.Sprint(g.Resources) != "[ws-1]" ||
		g.Ticket != "ZD-1" || string(g.GranterClaims) != `{"plan":"enterprise"}` || !g.ExpiresAt.Equal(a.ExpiresAt) ||
		g.Status(t0) != storage.StatusPending {
		t.Fatalf("grant round trip: %+v", g)
	}
	if _, err := s.Grant(ctx, "other", a.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("grant of another tenant: got %v, want ErrNotFound", err)
	}
}

func testRevokeGrant(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	mustCreate(t, s, newGrant("acme", "888888"))
	g, is := redeem(t, s, redeemParams("acme", "888888", "eng-1", t0))
	changed, err := s.RevokeGrant(ctx, "acme", g.ID, t0.Add(time.Minute), "user-1", "terminated", ev("acme", "grant.revoke"))
	if err != nil || !changed {
		t.Fatalf("revoke: %v %v", changed, err)
	}
	changed, err = s.RevokeGrant(ctx, "acme", g.ID, t0.Add(2*time.Minute), "user-1", "terminated", ev("acme", "grant.revoke"))
	if err != nil || changed {
		t.Fatalf("second revoke: changed=%v err=%v, want false, nil", changed, err)
	}
	if _, err := s.RevokeGrant(ctx, "other", g.ID, t0, "x", "y", ev("other", "grant.revoke")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("revoke from another tenant: %v", err)
	}
	st, _ := s.TokenState(ctx, is.Token.JTI)
	if st.Token.RevokedAt.IsZero() || st.Grant.RevokedAt.IsZero() {
		t.Fatalf("token still live after grant revoke: %+v", st)
	}
	if _, err := s.Refresh(ctx, is.Refresh.Hash, "cli", t0.Add(3*time.Minute), ev("acme", "refresh.reuse"), refreshIssue(t0)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("refresh after revoke: %v", err)
	}
	if n := auditCount(t, s, "acme", "grant.revoke"); n != 1 {
		t.Fatalf("revoke events = %d, want 1 (idempotent repeat writes none)", n)
	}
}

func testToggleOffEndsTokens(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	mustCreate(t, s, newGrant("acme", "121212"))
	pending := mustCreate(t, s, newGrant("acme", "343434"))
	_, is := redeem(t, s, redeemParams("acme", "121212", "eng-1", t0))
	n, err := s.SetSupportAccess(ctx, storage.Tenant{ID: "acme", SupportEnabled: false, ChangedBy: "admin", ChangedAt: t0.Add(time.Minute)}, ev("acme", "support_access.disable"), ev("acme", "grant.revoke"))
	if err != nil || n != 2 {
		t.Fatalf("toggle off ended %d grants (%v), want 2", n, err)
	}
	// The one end-of-grant path: one event per ended grant.
	if c := auditCount(t, s, "acme", "grant.revoke"); c != 2 {
		t.Fatalf("toggle off wrote %d grant.revoke events, want one per ended grant (2)", c)
	}
	st, _ := s.TokenState(ctx, is.Token.JTI)
	if st.TenantEnabled || st.Token.RevokedAt.IsZero() {
		t.Fatalf("token live after toggle off: %+v", st)
	}
	enable(t, s, "acme")
	if _, err := s.Redeem(ctx, redeemParams("acme", "343434", "eng-1", t0.Add(2*time.Minute)), issueFor("cli", t0)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a code from before toggle-off redeemed after re-enable: %v", err)
	}
	g, _ := s.Grant(ctx, "acme", pending.ID)
	if g.Status(t0) != storage.StatusRevoked {
		t.Fatalf("pending grant after toggle off: %s", g.Status(t0))
	}
}
