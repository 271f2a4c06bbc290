// Package storetest is the conformance suite every storage.Store backend
// must pass; SQLite and PostgreSQL run the very same tests.
package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

// Run runs the suite; open returns a fresh, empty, migrated store whose
// audit chain is keyed with auditKey.
func Run(t *testing.T, open func(t *testing.T) storage.Store, auditKey []byte) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"tenant/default off and toggle", testTenantToggle},
		{"grant/requires support on", testGrantRequiresSupport},
		{"grant/code collision", testCodeCollision},
		{"grant/list and status", testGrantList},
		{"redeem/once", testRedeemOnce},
		{"redeem/issue failure writes nothing", testRedeemIssueFailure},
		{"redeem/expired code and other tenant", testRedeemExpiredAndOtherTenant},
		{"redeem/tenant lockout voids codes", testTenantLockout},
		{"redeem/engineer lockout", testEngineerLockout},
		{"redeem/concurrent exactly one", testConcurrentRedeem},
		{"revoke/grant idempotent ends tokens", testRevokeGrant},
		{"revoke/toggle off ends tokens", testToggleOffEndsTokens},
		{"revoke/token", testRevokeToken},
		{"refresh/rotation and reuse", testRefresh},
		{"keys/add and list", testKeys},
		{"keys/rotate once under a race", testRotate},
		{"audit/filter and page", testAudit},
		{"notify/outbox in the same transaction, one claimer", testOutbox},
		{"notify/expiries recorded once", testExpiries},
		{"retention/engineers and archive", testRetention},
		{"audit/chain under concurrent writers", func(t *testing.T, s storage.Store) { testChainConcurrency(t, s, auditKey) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			tc.fn(t, s)
		})
	}
}

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func ev(tenant, action string) storage.AuditEvent {
	return audit.Event(t0, "", audit.Actor{Type: storage.ActorSystem, ID: "test"}, tenant, action, tenant, audit.Success, nil)
}

func randID(prefix string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return fmt.Sprintf("%s%x", prefix, b)
}

func enable(t *testing.T, s storage.Store, tenant string) {
	t.Helper()
	if _, err := s.SetSupportAccess(context.Background(), storage.Tenant{ID: tenant, SupportEnabled: true, ChangedBy: "admin", ChangedAt: t0}, ev(tenant, "support_access.enable")); err != nil {
		t.Fatal(err)
	}
}

func newGrant(tenant, code string) storage.Grant {
	return storage.Grant{
		ID: randID("grt_"), TenantID: tenant, Role: "manage", Environments: []string{"production"},
		Resources: []string{"ws-1"}, Ticket: "ZD-1", GrantedBy: "user-1", GrantedByIss: "https://customer",
		GranterRole: "admin", GranterClaims: []byte(`{"plan":"enterprise"}`),
		CreatedAt: t0, ExpiresAt: t0.Add(24 * time.Hour),
		CodeHash: []byte("hash-" + code), CodeExpiresAt: t0.Add(time.Hour),
	}
}

func mustCreate(t *testing.T, s storage.Store, g storage.Grant) storage.Grant {
	t.Helper()
	if err := s.CreateGrant(context.Background(), g, ev(g.TenantID, "grant.create")); err != nil {
		t.Fatal(err)
	}
	return g
}

func redeemParams(tenant, code, engineer string, now time.Time) storage.RedeemParams {
	return storage.RedeemParams{
		TenantID: tenant, CodeHash: []byte("hash-" + code),
		Engineer: storage.Engineer{Sub: engineer, Iss: "https://support", Email: engineer + "@support",
			Groups: []string{"support", "support-l1"}, MFA: true, Claims: []byte(`{"dept":"emea"}`)},
		Now: now, MaxFailures: 3, FailureWindow: time.Hour,
		FailureEvent: ev(tenant, "grant.redeem_failed"), LockoutEvent: ev(tenant, "tenant.lockout"),
	}
}

func issueFor(clientID string, now time.Time) func(storage.Grant) (storage.Issue, error) {
	return func(g storage.Grant) (storage.Issue, error) {
		return storage.Issue{
			Token: storage.Token{JTI: randID("jti_"), GrantID: g.ID, ClientID: clientID, Audience: "product", Role: g.Role, Scope: "read", IssuedAt: now, ExpiresAt: now.Add(15 * time.Minute)},
			Refresh: &storage.RefreshToken{Hash: []byte(randID("rt_")), GrantID: g.ID, ClientID: clientID, Audience: "product", Role: g.Role, Scope: "read",
				IssuedAt: now, ExpiresAt: now.Add(12 * time.Hour)},
			Events: []storage.AuditEvent{ev(g.TenantID, "grant.redeem"), ev(g.TenantID, "token.issue")},
		}, nil
	}
}

// redeem redeems and returns the issued token's jti and refresh hash.
func redeem(t *testing.T, s storage.Store, p storage.RedeemParams) (storage.Grant, storage.Issue) {
	t.Helper()
	var got storage.Issue
	g, err := s.Redeem(context.Background(), p, func(g storage.Grant) (storage.Issue, error) {
		is, err := issueFor("cli", p.Now)(g)
		got = is
		return is, err
	})
	if err != nil {
		t.Fatalf("redeem: %v", err)
	}
	return g, got
}

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
	if _, err := s.SetSupportAccess(ctx, storage.Tenant{ID: "acme", SupportEnabled: true, AllowNonAdminGrants: true, ChangedBy: "b", ChangedAt: t0.Add(time.Minute)}, ev("acme", "support_access.update")); err != nil {
		t.Fatal(err)
	}
	tn, _ = s.Tenant(ctx, "acme")
	if !tn.AllowNonAdminGrants || tn.ChangedBy != "b" {
		t.Fatalf("update not stored: %+v", tn)
	}
}

func testGrantRequiresSupport(t *testing.T, s storage.Store) {
	ctx := context.Background()
	if err := s.CreateGrant(ctx, newGrant("acme", "111111"), ev("acme", "grant.create")); !errors.Is(err, storage.ErrSupportOff) {
		t.Fatalf("unknown tenant: got %v, want ErrSupportOff", err)
	}
	enable(t, s, "acme")
	s.SetSupportAccess(ctx, storage.Tenant{ID: "acme", SupportEnabled: false, ChangedBy: "a", ChangedAt: t0}, ev("acme", "support_access.disable"))
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

func testRedeemOnce(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	mustCreate(t, s, newGrant("acme", "424242"))
	now := t0.Add(time.Minute)
	g, is := redeem(t, s, redeemParams("acme", "424242", "eng-1", now))
	if g.EngineerSub != "eng-1" || g.EngineerEmail != "eng-1@support" || fmt.Sprint(g.EngineerGroups) != "[support support-l1]" ||
		!g.EngineerMFA || string(g.EngineerClaims) != `{"dept":"emea"}` || !g.RedeemedAt.Equal(now) || g.CodeHash != nil || g.Status(now) != storage.StatusActive {
		t.Fatalf("bound grant = %+v", g)
	}
	st, err := s.TokenState(ctx, is.Token.JTI)
	if err != nil {
		t.Fatal(err)
	}
	if st.Grant.ID != g.ID || !st.TenantEnabled || st.Token.Role != "manage" || !st.Token.RevokedAt.IsZero() || st.Grant.EngineerSub != "eng-1" {
		t.Fatalf("token state = %+v", st)
	}
	_, err = s.Redeem(ctx, redeemParams("acme", "424242", "eng-2", now), issueFor("cli", now))
	var rf *storage.RedeemFailure
	if !errors.As(err, &rf) || !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second redemption: got %v, want RedeemFailure", err)
	}
	if n := auditCount(t, s, "acme", "grant.redeem_failed"); n != 1 {
		t.Fatalf("failure events = %d, want 1", n)
	}
}

func testRedeemIssueFailure(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	g := mustCreate(t, s, newGrant("acme", "555555"))
	boom := errors.New("policy says no")
	_, err := s.Redeem(ctx, redeemParams("acme", "555555", "eng-1", t0), func(storage.Grant) (storage.Issue, error) { return storage.Issue{}, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the issue error", err)
	}
	got, _ := s.Grant(ctx, "acme", g.ID)
	if !got.RedeemedAt.IsZero() || got.CodeHash == nil {
		t.Fatalf("a refused redemption changed the grant: %+v", got)
	}
	redeem(t, s, redeemParams("acme", "555555", "eng-1", t0)) // still redeemable
}

func testRedeemExpiredAndOtherTenant(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	enable(t, s, "other")
	mustCreate(t, s, newGrant("acme", "777777"))
	for name, p := range map[string]storage.RedeemParams{
		"code window passed": redeemParams("acme", "777777", "eng-1", t0.Add(time.Hour)),
		"other tenant":       redeemParams("other", "777777", "eng-1", t0),
		"unknown tenant":     redeemParams("nobody", "777777", "eng-1", t0),
	} {
		if _, err := s.Redeem(ctx, p, issueFor("cli", p.Now)); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s: got %v, want ErrNotFound", name, err)
		}
	}
}

func testTenantLockout(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	live := mustCreate(t, s, newGrant("acme", "100001"))
	var rf *storage.RedeemFailure
	for i := 0; i < 3; i++ {
		// different engineers so that only the tenant counter reaches the limit
		_, err := s.Redeem(ctx, redeemParams("acme", fmt.Sprintf("99999%d", i), fmt.Sprintf("eng-%d", i), t0), issueFor("cli", t0))
		if !errors.As(err, &rf) {
			t.Fatalf("attempt %d: %v", i, err)
		}
		if rf.Lockout != (i == 2) {
			t.Fatalf("attempt %d: lockout = %v", i, rf.Lockout)
		}
	}
	if rf.Voided != 1 {
		t.Fatalf("voided = %d, want 1", rf.Voided)
	}
	g, _ := s.Grant(ctx, "acme", live.ID)
	if g.Status(t0) != storage.StatusRevoked || g.CodeHash != nil || g.RevokeReason != "lockout" {
		t.Fatalf("pending grant after lockout = %+v", g)
	}
	if _, err := s.Redeem(ctx, redeemParams("acme", "100001", "eng-9", t0), issueFor("cli", t0)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("voided code redeemed: %v", err)
	}
	if n := auditCount(t, s, "acme", "tenant.lockout"); n != 1 {
		t.Fatalf("lockout events = %d, want 1", n)
	}
}

func testEngineerLockout(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	for i, tenant := range []string{"t1", "t2", "t3"} { // unknown tenants: only the engineer counts
		if _, err := s.Redeem(ctx, redeemParams(tenant, "000000", "eng-x", t0), issueFor("cli", t0)); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	g := newGrant("acme", "246810")
	g.CodeExpiresAt = t0.Add(3 * time.Hour)
	mustCreate(t, s, g)
	if _, err := s.Redeem(ctx, redeemParams("acme", "246810", "eng-x", t0), issueFor("cli", t0)); !errors.Is(err, storage.ErrEngineerLocked) {
		t.Fatalf("locked engineer: got %v, want ErrEngineerLocked", err)
	}
	redeem(t, s, redeemParams("acme", "246810", "eng-x", t0.Add(2*time.Hour))) // the window passed
}

func testConcurrentRedeem(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	mustCreate(t, s, newGrant("acme", "314159"))
	const n = 64
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, losses := 0, 0
	var other []error
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := redeemParams("acme", "314159", fmt.Sprintf("eng-%d", i), t0)
			p.MaxFailures = 1000
			_, err := s.Redeem(ctx, p, issueFor("cli", t0))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, storage.ErrNotFound):
				losses++
			default:
				other = append(other, err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 || losses != n-1 || len(other) > 0 {
		t.Fatalf("wins=%d losses=%d errors=%v; want exactly one win", wins, losses, other)
	}
	if c := auditCount(t, s, "acme", "token.issue"); c != 1 {
		t.Fatalf("token.issue events = %d, want 1", c)
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
	n, err := s.SetSupportAccess(ctx, storage.Tenant{ID: "acme", SupportEnabled: false, ChangedBy: "admin", ChangedAt: t0.Add(time.Minute)}, ev("acme", "support_access.disable"))
	if err != nil || n != 2 {
		t.Fatalf("toggle off ended %d grants (%v), want 2", n, err)
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

func testRevokeToken(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	mustCreate(t, s, newGrant("acme", "565656"))
	g, is := redeem(t, s, redeemParams("acme", "565656", "eng-1", t0))
	for i, want := range []bool{true, false} {
		if ok, err := s.MarkTokenUsed(ctx, is.Token.JTI, t0.Add(time.Duration(i)*time.Second), ev("acme", "token.introspect")); ok != want || err != nil {
			t.Fatalf("mark used #%d: %v %v", i, ok, err)
		}
	}
	if st, _ := s.TokenState(ctx, is.Token.JTI); !st.Token.FirstUsedAt.Equal(t0) {
		t.Fatalf("first use = %v", st.Token.FirstUsedAt)
	}
	if n := auditCount(t, s, "acme", "token.introspect"); n != 1 {
		t.Fatalf("first-use events = %d", n)
	}
	if ok, err := s.RevokeToken(ctx, is.Token.JTI, t0, ev("acme", "token.revoke")); !ok || err != nil {
		t.Fatalf("revoke token: %v %v", ok, err)
	}
	if ok, err := s.RevokeToken(ctx, is.Token.JTI, t0, ev("acme", "token.revoke")); ok || err != nil {
		t.Fatalf("second revoke: %v %v", ok, err)
	}
	if ok, err := s.RevokeToken(ctx, "no-such-jti", t0, ev("acme", "token.revoke")); ok || err != nil {
		t.Fatalf("unknown jti: %v %v", ok, err)
	}
	if _, err := s.TokenState(ctx, "no-such-jti"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("unknown jti state: %v", err)
	}
	cur, _ := s.Grant(ctx, "acme", g.ID)
	if !cur.RevokedAt.IsZero() {
		t.Fatal("revoking one access token ended the grant")
	}
}

func refreshIssue(now time.Time) func(storage.Grant, storage.RefreshToken) (storage.Issue, error) {
	return func(g storage.Grant, r storage.RefreshToken) (storage.Issue, error) {
		is, err := issueFor(r.ClientID, now)(g)
		is.Refresh.Hash = []byte(randID("rt2_"))
		return is, err
	}
}

func testRefresh(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	mustCreate(t, s, newGrant("acme", "676767"))
	g, is := redeem(t, s, redeemParams("acme", "676767", "eng-1", t0))
	if _, err := s.Refresh(ctx, is.Refresh.Hash, "other-client", t0, ev("acme", "refresh.reuse"), refreshIssue(t0)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("refresh by another client: %v", err)
	}
	rt, rg, err := s.RefreshGrant(ctx, is.Refresh.Hash)
	if err != nil || rg.ID != g.ID || rt.ClientID != "cli" || rt.Role != "manage" || rt.Scope != "read" {
		t.Fatalf("refresh lookup: %+v %v", rt, err)
	}
	got, err := s.Refresh(ctx, is.Refresh.Hash, "cli", t0.Add(time.Minute), ev("acme", "refresh.reuse"), refreshIssue(t0))
	if err != nil || got.ID != g.ID {
		t.Fatalf("refresh: %v", err)
	}
	// reuse of the consumed token ends the whole grant
	if _, err := s.Refresh(ctx, is.Refresh.Hash, "cli", t0.Add(2*time.Minute), ev("acme", "refresh.reuse"), refreshIssue(t0)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("reuse: %v", err)
	}
	cur, _ := s.Grant(ctx, "acme", g.ID)
	if cur.RevokeReason != "refresh_token_reuse" {
		t.Fatalf("grant after refresh reuse: %+v", cur)
	}
	if n := auditCount(t, s, "acme", "refresh.reuse"); n != 1 {
		t.Fatalf("reuse events = %d", n)
	}
}

func testKeys(t *testing.T, s storage.Store) {
	ctx := context.Background()
	k := storage.SigningKey{ID: "k1", Algorithm: "ES256", PrivateSealed: []byte{1, 2, 3}, PublicJWK: []byte(`{"kty":"EC"}`), State: storage.KeyCurrent, CreatedAt: t0, ActivatedAt: t0}
	if err := s.AddSigningKey(ctx, k, ev("", "key.create")); err != nil {
		t.Fatal(err)
	}
	k2 := k
	k2.ID = "k2"
	if err := s.AddSigningKey(ctx, k2, ev("", "key.create")); !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("second current key: got %v, want ErrAlreadyExists", err)
	}
	keys, err := s.SigningKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].ID != "k1" || string(keys[0].PrivateSealed) != "\x01\x02\x03" || !keys[0].ActivatedAt.Equal(t0) || !keys[0].RetireAt.IsZero() {
		t.Fatalf("keys = %+v, %v", keys, err)
	}
}

func auditCount(t *testing.T, s storage.Store, tenant, action string) int {
	t.Helper()
	evs, err := s.Audit(context.Background(), storage.AuditFilter{TenantID: tenant, Action: action, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

func testAudit(t *testing.T, s storage.Store) {
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		e := ev("acme", "grant.create")
		e.Time = t0.Add(time.Duration(i) * time.Minute)
		if i%2 == 0 {
			e.ActorType = storage.ActorTenantAdmin
		}
		e.Detail = []byte(fmt.Sprintf(`{"i":%d}`, i))
		if err := s.AppendAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	s.AppendAudit(ctx, ev("other", "grant.create"))
	all, err := s.Audit(ctx, storage.AuditFilter{TenantID: "acme"})
	if err != nil || len(all) != 5 || string(all[0].Detail) != `{"i":4}` {
		t.Fatalf("audit = %d events (%v), newest first expected", len(all), err)
	}
	admins, _ := s.Audit(ctx, storage.AuditFilter{TenantID: "acme", ActorType: storage.ActorTenantAdmin})
	if len(admins) != 3 {
		t.Fatalf("actor filter: %d", len(admins))
	}
	window, _ := s.Audit(ctx, storage.AuditFilter{TenantID: "acme", Since: t0.Add(time.Minute), Until: t0.Add(3 * time.Minute)})
	if len(window) != 2 {
		t.Fatalf("time filter: %d", len(window))
	}
	page1, _ := s.Audit(ctx, storage.AuditFilter{TenantID: "acme", Limit: 2})
	page2, _ := s.Audit(ctx, storage.AuditFilter{TenantID: "acme", Limit: 2, BeforeID: page1[1].ID})
	if len(page1) != 2 || len(page2) != 2 || page2[0].ID >= page1[1].ID {
		t.Fatalf("pagination broken: %v %v", page1, page2)
	}
}

func testRotate(t *testing.T, s storage.Store) {
	ctx := context.Background()
	key := func(id, state string) storage.SigningKey {
		return storage.SigningKey{ID: id, Algorithm: "ES256", PrivateSealed: []byte{1}, PublicJWK: []byte(`{}`), State: state, CreatedAt: t0, ActivatedAt: t0}
	}
	if err := s.AddSigningKey(ctx, key("k1", storage.KeyCurrent), ev("", "key.create")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSigningKey(ctx, key("k2", storage.KeyNext), ev("", "key.create")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSigningKey(ctx, key("k2b", storage.KeyNext), ev("", "key.create")); !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("a second next key: %v", err)
	}
	// Two replicas rotate at once: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			nk := key(fmt.Sprintf("k3-%d", i), storage.KeyNext)
			errs[i] = s.RotateKeys(ctx, storage.RotateParams{ExpectCurrent: "k1", Now: t0.Add(time.Hour), RetireAt: t0.Add(2 * time.Hour), NewNext: nk, Event: ev("", "key.rotate")})
		}(i)
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, storage.ErrConflict):
			t.Fatalf("rotation: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d rotations won, want 1", wins)
	}
	states := map[string]string{}
	keys, _ := s.SigningKeys(ctx)
	for _, k := range keys {
		states[k.State] += k.ID
	}
	if states[storage.KeyCurrent] != "k2" || states[storage.KeyPrevious] != "k1" || !strings.HasPrefix(states[storage.KeyNext], "k3-") {
		t.Fatalf("after rotation: %v", states)
	}
	// The next rotation, after k1's window, retires it.
	cur := states[storage.KeyNext]
	if err := s.RotateKeys(ctx, storage.RotateParams{ExpectCurrent: "k2", Now: t0.Add(3 * time.Hour), RetireAt: t0.Add(4 * time.Hour), NewNext: key("k4", storage.KeyNext), Event: ev("", "key.rotate")}); err != nil {
		t.Fatal(err)
	}
	keys, _ = s.SigningKeys(ctx)
	got := map[string]string{}
	for _, k := range keys {
		got[k.ID] = k.State
	}
	if got["k1"] != "" || got["k2"] != storage.KeyPrevious || got[cur] != storage.KeyCurrent || got["k4"] != storage.KeyNext {
		t.Fatalf("after the second rotation: %v", got)
	}
}

func testChainConcurrency(t *testing.T, s storage.Store, key []byte) {
	ctx := context.Background()
	enable(t, s, "acme")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				tenant := "acme"
				if i%3 == 0 {
					tenant = fmt.Sprintf("t%d", g%4)
				}
				e := ev(tenant, "grant.create")
				e.Detail = []byte(fmt.Sprintf(`{"g":%d,"i":%d}`, g, i))
				if err := s.AppendAudit(ctx, e); err != nil {
					errs <- err
					return
				}
			}
			// state changes append to the same chain in their own transactions
			if err := s.CreateGrant(ctx, newGrant("acme", fmt.Sprintf("9%05d", g)), ev("acme", "grant.create")); err != nil {
				errs <- err
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n, err := audit.Verify(ctx, s, key, nil)
	if err != nil {
		t.Fatalf("chain after concurrent writers: %v", err)
	}
	if want := 1 + 16*10 + 16; n != want {
		t.Fatalf("verified %d events, want %d", n, want)
	}
	if _, err := audit.Verify(ctx, s, []byte("another key, another key, another"), nil); err == nil {
		t.Fatal("the chain verified under a different key")
	}
}

func testOutbox(t *testing.T, s storage.Store) {
	ctx := context.Background()
	s.SeeAdmin(ctx, "acme", "ada", "ada@acme.example", t0)
	s.SeeAdmin(ctx, "acme", "bob", "bob@acme.example", t0)
	s.SeeAdmin(ctx, "acme", "ada", "ada@new.example", t0.Add(time.Minute)) // address updated
	enable(t, s, "acme")                                                   // a toggle: always to every admin
	mustCreate(t, s, newGrant("acme", "111222"))                           // grant_created: not by default
	msgs, err := s.ClaimOutbox(ctx, t0.Add(time.Hour), 24*time.Hour, 10)
	if err != nil {
		t.Fatal(err)
	}
	var dests []string
	for _, m := range msgs {
		dests = append(dests, m.Channel+":"+m.Destination+":"+m.Kind)
	}
	if fmt.Sprint(dests) != "[email:ada@new.example:toggle email:bob@acme.example:toggle]" {
		t.Fatalf("outbox = %v", dests)
	}
	n := storage.NotificationSettings{TenantID: "acme", Emails: []string{"sec@acme.example"}, WebhookURL: "https://hooks.acme.example/actas",
		Kinds: map[string][]string{storage.ToAdmins: {storage.NotifyGrantCreated}, storage.ToEmails: {storage.NotifyGrantCreated},
			storage.ToWebhook: {storage.NotifyGrantCreated, storage.NotifyGrantExpired}}, ChangedBy: "ada", ChangedAt: t0}
	if err := s.SetNotificationSettings(ctx, n, ev("acme", "notifications.update")); err != nil {
		t.Fatal(err)
	}
	got, _ := s.NotificationSettings(ctx, "acme")
	if fmt.Sprint(got.Emails, got.Kinds, got.WebhookURL) != fmt.Sprint(n.Emails, n.Kinds, n.WebhookURL) {
		t.Fatalf("settings round trip: %+v", got)
	}
	// Only the webhook asked for expiries.
	n2 := n
	n2.Kinds = map[string][]string{storage.ToWebhook: {storage.NotifyGrantCreated}}
	s.SetNotificationSettings(ctx, n2, ev("acme", "notifications.update"))
	if got, _ := s.NotificationSettings(ctx, "acme"); len(got.Kinds[storage.ToAdmins]) != 0 {
		t.Fatalf("settings round trip: %+v", got)
	}
	s.SetNotificationSettings(ctx, n, ev("acme", "notifications.update"))
	mustCreate(t, s, newGrant("acme", "333444"))
	// Two replicas claim at once: each message goes to exactly one.
	var wg sync.WaitGroup
	claimed := make([][]storage.OutboxMessage, 2)
	for i := range claimed {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			claimed[i], _ = s.ClaimOutbox(ctx, t0.Add(time.Hour), 24*time.Hour, 10)
		}(i)
	}
	wg.Wait()
	seen := map[int64]int{}
	for _, c := range claimed {
		for _, m := range c {
			seen[m.ID]++
		}
	}
	if len(seen) != 4 { // ada, bob, sec@ by email, and the webhook
		t.Fatalf("claimed %d distinct messages, want 4: %v", len(seen), seen)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("message %d claimed %d times", id, n)
		}
	}
	// A failure is retried after its backoff; a delivery is final.
	var one storage.OutboxMessage
	for _, c := range claimed {
		if len(c) > 0 {
			one = c[0]
		}
	}
	s.FinishOutbox(ctx, one.ID, t0.Add(time.Hour), "connection refused", t0.Add(2*time.Hour))
	if again, _ := s.ClaimOutbox(ctx, t0.Add(90*time.Minute), 24*time.Hour, 10); len(again) != 0 {
		t.Fatalf("claimed before the backoff: %v", again)
	}
	again, _ := s.ClaimOutbox(ctx, t0.Add(2*time.Hour), 24*time.Hour, 10)
	if len(again) != 1 || again[0].ID != one.ID || again[0].Attempts != 2 {
		t.Fatalf("retry: %+v", again)
	}
	s.FinishOutbox(ctx, one.ID, t0.Add(2*time.Hour), "", time.Time{})
	// Leases that ran out make unfinished messages due again; the
	// delivered one never is.
	after, _ := s.ClaimOutbox(ctx, t0.Add(60*time.Hour), 24*time.Hour, 10)
	for _, m := range after {
		if m.ID == one.ID {
			t.Fatal("a delivered message was claimed again")
		}
	}
	if len(after) != 5 {
		t.Fatalf("after delivery, %d messages are due, want the 5 undelivered", len(after))
	}
}

func testExpiries(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	short := newGrant("acme", "500001")
	short.ExpiresAt = t0.Add(time.Hour)
	mustCreate(t, s, short)
	mustCreate(t, s, newGrant("acme", "500002")) // 24h
	revoked := newGrant("acme", "500003")
	revoked.ExpiresAt = t0.Add(time.Hour)
	mustCreate(t, s, revoked)
	s.RevokeGrant(ctx, "acme", revoked.ID, t0, "ada", "terminated", ev("acme", "grant.revoke"))
	e := ev("", "grant.expire")
	for i, want := range []int{1, 0} {
		n, err := s.RecordExpiries(ctx, t0.Add(2*time.Hour), 100, e)
		if err != nil || n != want {
			t.Fatalf("pass %d: %d %v, want %d", i, n, err, want)
		}
	}
	evs, _ := s.Audit(ctx, storage.AuditFilter{TenantID: "acme", Action: "grant.expire"})
	if len(evs) != 1 || evs[0].Target != short.ID {
		t.Fatalf("expiry events: %+v", evs)
	}
}

func testRetention(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	mustCreate(t, s, newGrant("acme", "700001"))
	old, is := redeem(t, s, redeemParams("acme", "700001", "eng-old", t0))
	s.RevokeGrant(ctx, "acme", old.ID, t0.Add(time.Hour), "ada", "terminated", ev("acme", "grant.revoke"))
	recent := newGrant("acme", "700002")
	recent.CreatedAt, recent.ExpiresAt, recent.CodeExpiresAt = t0.Add(95*24*time.Hour), t0.Add(120*24*time.Hour), t0.Add(96*24*time.Hour)
	mustCreate(t, s, recent)
	now := t0.Add(100 * 24 * time.Hour)
	r, err := s.Prune(ctx, storage.PruneParams{Now: now, EngineersBefore: now.Add(-60 * 24 * time.Hour), ArchiveBefore: now.Add(-90 * 24 * time.Hour)})
	if err != nil || r.Archived != 1 || r.Engineers < 1 {
		t.Fatalf("prune: %+v %v", r, err)
	}
	if _, err := s.Grant(ctx, "acme", old.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("an ended grant was not archived: %v", err)
	}
	if _, err := s.TokenState(ctx, is.Token.JTI); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("an archived grant's token remains: %v", err)
	}
	if _, err := s.Grant(ctx, "acme", recent.ID); err != nil {
		t.Fatalf("a live grant was pruned: %v", err)
	}
}
