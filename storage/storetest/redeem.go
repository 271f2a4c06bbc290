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

func testRedeemOnce(t *testing.T, s storage.Store) {
	ctx := context.Background()
	// Non-admins may grant here: redeem (below) checks that issue sees it.
	if _, err := s.SetSupportAccess(ctx, storage.Tenant{ID: "acme", SupportEnabled: true, AllowNonAdminGrants: true, ChangedBy: "admin", ChangedAt: t0},
		ev("acme", "support_access.enable"), ev("acme", "grant.revoke")); err != nil {
		t.Fatal(err)
	}
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
	_, err := s.Redeem(ctx, redeemParams("acme", "555555", "eng-1", t0), func(storage.Grant, storage.Tenant) (storage.Issue, error) { return storage.Issue{}, boom })
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
		is, err := issueFor(r.ClientID, now)(g, storage.Tenant{})
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

// First uses are written in the tenant's redemption batches: racing each
// other and redemptions, each token is marked once with one event, a
// first use whose event storage refuses leaves nothing behind while the
// writes batched with it commit, and the chain verifies.
func testFirstUseRacingRedemptions(t *testing.T, s storage.Store, key []byte) {
	ctx := context.Background()
	enable(t, s, "acme")
	const n = 16
	jtis := make([]string, n+1)
	for i := range jtis {
		mustCreate(t, s, newGrant("acme", fmt.Sprintf("81%04d", i)))
		_, is := redeem(t, s, redeemParams("acme", fmt.Sprintf("81%04d", i), "eng-1", t0))
		jtis[i] = is.Token.JTI
		mustCreate(t, s, newGrant("acme", fmt.Sprintf("82%04d", i)))
	}
	var wg sync.WaitGroup
	var marked, redeemed atomic.Int64
	bad := jtis[n] // its event has no action: refused by storage
	for i := range jtis {
		wg.Go(func() {
			if _, err := s.Redeem(ctx, redeemParams("acme", fmt.Sprintf("82%04d", i), "eng-2", t0), issueFor("cli", t0)); err != nil {
				t.Errorf("redeem %d: %v", i, err)
			}
			redeemed.Add(1)
		})
		if jtis[i] == bad {
			wg.Go(func() {
				if ok, err := s.MarkTokenUsed(ctx, bad, t0, storage.AuditEvent{TenantID: "acme"}); ok || err == nil {
					t.Errorf("first use with a refused event: %v %v", ok, err)
				}
			})
			continue
		}
		for range 3 {
			wg.Go(func() {
				ok, err := s.MarkTokenUsed(ctx, jtis[i], t0, ev("acme", "token.introspect"))
				if err != nil {
					t.Errorf("mark %d: %v", i, err)
				}
				if ok {
					marked.Add(1)
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if marked.Load() != n || redeemed.Load() != n+1 {
		t.Fatalf("%d first uses recorded for %d tokens, %d of %d redemptions", marked.Load(), n, redeemed.Load(), n+1)
	}
	if c := auditCount(t, s, "acme", "token.introspect"); c != n {
		t.Fatalf("%d first-use events, want %d", c, n)
	}
	for _, jti := range jtis {
		st, err := s.TokenState(ctx, jti)
		if err != nil || st.Token.FirstUsedAt.IsZero() != (jti == bad) {
			t.Fatalf("token %s: first used %v (%v)", jti, st.Token.FirstUsedAt, err)
		}
	}
	if _, err := audit.Verify(ctx, s, key, nil); err != nil {
		t.Fatalf("chain: %v", err)
	}
	if ok, err := s.MarkTokenUsed(ctx, bad, t0, ev("acme", "token.introspect")); !ok || err != nil {
		t.Fatalf("first use after a refused one: %v %v", ok, err)
	}
}
