package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/actas/actas/storage"
)

// testSessions: a session is found by its secret while live, not once
// idle, past its limit or ended; ending it revokes what it issued and
// queues a logout token for each client that takes them.
func testSessions(t *testing.T, s storage.Store) {
	ctx := context.Background()
	setLogoutClients(s, "web")
	enable(t, s, "acme")
	mustCreate(t, s, newGrant("acme", "424242"))
	g, _ := redeem(t, s, redeemParams("acme", "424242", "eng-1", t0))
	sess := storage.Session{ID: randID("sid_"), SecretHash: []byte(randID("sec_")), Kind: storage.SessionEngineer,
		Subject: "eng-1", Issuer: "https://support", Email: "eng-1@support", Claims: []byte(`{"groups":["support"]}`),
		AMR: []string{"pwd", "mfa"}, ACR: "gold", AuthTime: t0, CreatedAt: t0, LastSeenAt: t0, ExpiresAt: t0.Add(8 * time.Hour)}
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	got, err := s.SessionBySecret(ctx, storage.SessionEngineer, sess.SecretHash, t0.Add(10*time.Minute), t0.Add(-20*time.Minute))
	if err != nil || got.ID != sess.ID || got.Subject != "eng-1" || fmt.Sprint(got.AMR) != "[pwd mfa]" || got.ACR != "gold" || !got.AuthTime.Equal(t0) {
		t.Fatalf("live session: %+v %v", got, err)
	}
	if !got.LastSeenAt.Equal(t0.Add(10 * time.Minute)) {
		t.Fatalf("use not recorded: last seen %v", got.LastSeenAt)
	}
	for name, q := range map[string][2]time.Time{
		"idle":    {t0.Add(50 * time.Minute), t0.Add(20 * time.Minute)},
		"expired": {t0.Add(9 * time.Hour), t0},
	} {
		if _, err := s.SessionBySecret(ctx, storage.SessionEngineer, sess.SecretHash, q[0], q[1]); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("%s session found: %v", name, err)
		}
	}
	if _, err := s.SessionBySecret(ctx, storage.SessionEngineer, []byte("other"), t0, t0.Add(-time.Hour)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("unknown secret: %v", err)
	}

	// Tokens issued in the session, to a client that takes logout and
	// one that does not.
	now := t0.Add(11 * time.Minute)
	for _, client := range []string{"web", "other"} {
		c := storage.AuthCode{Hash: []byte(randID("code_")), ClientID: client, RedirectURI: "https://p/cb", CodeChallenge: "ch",
			SessionID: sess.ID, GrantID: g.ID, TenantID: "acme", Scope: "openid", AuthTime: t0, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
		putCode(t, s, c, now)
		if _, _, err := s.ExchangeAuthCode(ctx, c.Hash, c, now, ev("", "grant.revoke"), codeIssue(now)); err != nil {
			t.Fatal(err)
		}
	}
	ended, err := s.EndSession(ctx, sess.ID, now, "logout", ev("", "token.revoke"))
	if err != nil || !ended {
		t.Fatalf("end session: %v %v", ended, err)
	}
	if again, err := s.EndSession(ctx, sess.ID, now, "logout", ev("", "token.revoke")); err != nil || again {
		t.Fatalf("second end: %v %v", again, err)
	}
	if _, err := s.SessionBySecret(ctx, storage.SessionEngineer, sess.SecretHash, now, t0); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("ended session found: %v", err)
	}
	// Past its limit, a session not ended yet is listed to be ended.
	late := sess
	late.ID, late.SecretHash, late.ExpiresAt = randID("sid_"), []byte(randID("sec_")), t0.Add(time.Hour)
	if err := s.CreateSession(ctx, late); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.ExpiredSessions(ctx, t0.Add(2*time.Hour), 10); err != nil || fmt.Sprint(ids) != "["+late.ID+"]" {
		t.Fatalf("expired sessions: %v %v", ids, err)
	}
	logouts := claimLogouts(t, s, now)
	if len(logouts) != 1 || logouts[0].ClientID != "web" || logouts[0].SID != sess.ID || logouts[0].Sub != "user-1" || logouts[0].JTI == "" {
		t.Fatalf("logout tokens queued: %+v", logouts)
	}
	if c := auditCount(t, s, "acme", "token.revoke"); c != 1 {
		t.Fatalf("token.revoke events = %d, want one for the grant", c)
	}
	// The grant itself lives on: a session's end is not the customer's.
	if gg, err := s.Grant(ctx, "acme", g.ID); err != nil || !gg.RevokedAt.IsZero() {
		t.Fatalf("grant after session end: %+v %v", gg, err)
	}
}

// testAuthCodes: a code is used once, even by many at once; a reuse ends
// its grant; a wrong binding burns it; requests answer once.
func testAuthCodes(t *testing.T, s storage.Store) {
	ctx := context.Background()
	setLogoutClients(s, "web")
	enable(t, s, "acme")
	mustCreate(t, s, newGrant("acme", "515151"))
	g, _ := redeem(t, s, redeemParams("acme", "515151", "eng-1", t0))

	a := storage.AuthRequest{ID: randID("req_"), BrowserHash: []byte("b"), ClientID: "web", RedirectURI: "https://p/cb", Scope: "openid",
		State: "st", Nonce: "n", CodeChallenge: "ch", MaxAge: -1, UpstreamNonce: "un", UpstreamVerifier: "uv", CreatedAt: t0, ExpiresAt: t0.Add(15 * time.Minute)}
	if err := s.PutAuthRequest(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAuthRequestSession(ctx, a.ID, "sid-1"); err != nil {
		t.Fatal(err)
	}
	got, err := s.AuthRequest(ctx, a.ID, t0.Add(time.Minute))
	if err != nil || got.SessionID != "sid-1" || got.MaxAge != -1 || got.UpstreamVerifier != "uv" || got.State != "st" {
		t.Fatalf("auth request: %+v %v", got, err)
	}
	if _, err := s.AuthRequest(ctx, a.ID, t0.Add(16*time.Minute)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("expired request found: %v", err)
	}
	now := t0.Add(time.Minute)
	c := storage.AuthCode{Hash: []byte(randID("code_")), ClientID: "web", RedirectURI: "https://p/cb", CodeChallenge: "ch", Nonce: "n",
		SessionID: "sid-1", GrantID: g.ID, TenantID: "acme", Scope: "openid read", AuthTime: t0, AMR: []string{"pwd"}, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
	if err := s.CreateAuthCode(ctx, c, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAuthCode(ctx, storage.AuthCode{Hash: []byte("second"), CreatedAt: now, ExpiresAt: now}, a.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a request answered twice: %v", err)
	}

	const n = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, losses := 0, 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gg, cc, err := s.ExchangeAuthCode(ctx, c.Hash, c, now, ev("", "grant.revoke"), codeIssue(now))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && gg.ID == g.ID && cc.Nonce == "n" && fmt.Sprint(cc.AMR) == "[pwd]":
				wins++
			case errors.Is(err, storage.ErrNotFound):
				losses++
			default:
				t.Errorf("exchange: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || losses != n-1 {
		t.Fatalf("wins=%d losses=%d; want exactly one", wins, losses)
	}
	// Every loser was a reuse: the grant has ended, and the client heard.
	gg, _ := s.Grant(ctx, "acme", g.ID)
	if gg.RevokeReason != "authorization_code_reuse" {
		t.Fatalf("grant after code reuse: revoked %v for %q", gg.RevokedAt, gg.RevokeReason)
	}
	if l := claimLogouts(t, s, now); len(l) != 1 || l[0].SID != "sid-1" || l[0].Reason != "authorization_code_reuse" {
		t.Fatalf("logouts after reuse: %+v", l)
	}

	// A wrong binding burns a live code: the right one then fails too,
	// and nothing else ends.
	mustCreate(t, s, newGrant("acme", "616161"))
	g2, _ := redeem(t, s, redeemParams("acme", "616161", "eng-1", t0))
	c2 := c
	c2.Hash, c2.GrantID = []byte(randID("code_")), g2.ID
	putCode(t, s, c2, now)
	for name, bad := range map[string]storage.AuthCode{
		"client": {ClientID: "other", RedirectURI: c2.RedirectURI, CodeChallenge: c2.CodeChallenge},
	} {
		if _, _, err := s.ExchangeAuthCode(ctx, c2.Hash, bad, now, ev("", "grant.revoke"), codeIssue(now)); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("wrong %s: %v", name, err)
		}
	}
	if _, _, err := s.ExchangeAuthCode(ctx, c2.Hash, c2, now, ev("", "grant.revoke"), codeIssue(now)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a burnt code exchanged: %v", err)
	}

	// Live grants an engineer redeemed, and none of another's.
	gs, err := s.EngineerGrants(ctx, "eng-1", "https://support", now)
	if err != nil || len(gs) != 1 || gs[0].ID != g2.ID {
		t.Fatalf("engineer grants: %v %v", gs, err)
	}
	if gs, _ := s.EngineerGrants(ctx, "eng-2", "https://support", now); len(gs) != 0 {
		t.Fatalf("another engineer's grants: %v", gs)
	}
	if n, err := s.PruneOP(ctx, now.Add(48*time.Hour), 100); err != nil || n < 2 {
		t.Fatalf("prune: %d %v", n, err)
	}
}

func putCode(t *testing.T, s storage.Store, c storage.AuthCode, now time.Time) {
	t.Helper()
	a := storage.AuthRequest{ID: randID("req_"), BrowserHash: []byte("b"), ClientID: c.ClientID, MaxAge: -1, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
	if err := s.PutAuthRequest(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAuthCode(context.Background(), c, a.ID); err != nil {
		t.Fatal(err)
	}
}

func codeIssue(now time.Time) func(storage.Grant, storage.AuthCode) (storage.Issue, error) {
	return func(g storage.Grant, c storage.AuthCode) (storage.Issue, error) {
		is, err := issueFor(c.ClientID, now)(g, storage.Tenant{})
		is.Token.SID, is.Refresh.SID = c.SessionID, c.SessionID
		is.Events = is.Events[1:]
		return is, err
	}
}

func setLogoutClients(s storage.Store, ids ...string) {
	if h, ok := s.(interface{ SetLogoutClients([]string) }); ok {
		h.SetLogoutClients(ids)
	}
}

// claimLogouts claims every queued logout token.
func claimLogouts(t *testing.T, s storage.Store, now time.Time) []storage.Logout {
	t.Helper()
	msgs, err := s.ClaimOutbox(context.Background(), now.Add(time.Hour), time.Hour, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []storage.Logout
	for _, m := range msgs {
		if m.Channel != "logout" {
			continue
		}
		var l storage.Logout
		if err := json.Unmarshal(m.Payload, &l); err != nil || m.Destination != l.ClientID {
			t.Fatalf("logout message %+v: %v", m, err)
		}
		out = append(out, l)
	}
	return out
}

// testStateCache: a token state read before a change is never answered
// after it. Each change that can end or narrow a live token is made after
// the state was read (and so may be cached), and the next read must show it.
func testStateCache(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	live := func(code string) storage.Issue {
		mustCreate(t, s, newGrant("acme", code))
		_, is := redeem(t, s, redeemParams("acme", code, "eng-1", t0))
		if st, err := s.TokenState(ctx, is.Token.JTI); err != nil || !st.Token.RevokedAt.IsZero() {
			t.Fatalf("fresh token: %+v %v", st.Token, err)
		}
		return is
	}
	state := func(is storage.Issue) storage.TokenState {
		st, err := s.TokenState(ctx, is.Token.JTI)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	now := t0.Add(time.Minute)

	a := live("700001")
	if _, err := s.RevokeToken(ctx, a.Token.JTI, now, ev("acme", "token.revoke")); err != nil {
		t.Fatal(err)
	}
	if state(a).Token.RevokedAt.IsZero() {
		t.Fatal("revoked token answered from the cache as live")
	}

	b := live("700002")
	if _, err := s.RevokeGrant(ctx, "acme", b.Token.GrantID, now, "ada", "terminated", ev("acme", "grant.revoke")); err != nil {
		t.Fatal(err)
	}
	if state(b).Grant.RevokedAt.IsZero() {
		t.Fatal("ended grant answered from the cache as live")
	}

	c := live("700003")
	if _, err := s.SetSupportAccess(ctx, storage.Tenant{ID: "acme", SupportEnabled: true, AllowNonAdminGrants: true, ChangedBy: "ada", ChangedAt: now},
		ev("acme", "support_access.update"), ev("acme", "grant.revoke")); err != nil {
		t.Fatal(err)
	}
	if !state(c).AllowNonAdminGrants {
		t.Fatal("a tenant setting change answered from the cache")
	}

	err := s.ApplyRole(ctx, storage.RoleChange{TenantID: "acme", Sub: "user-1", Iss: "https://customer", Role: "monitor",
		Above: []string{"manage", "admin"}, Now: now, Reason: "token", GrantEvent: ev("acme", "grant.cap")})
	if err != nil {
		t.Fatal(err)
	}
	if st := state(c); st.Token.Role != "monitor" {
		t.Fatalf("a capped token answered from the cache as %q", st.Token.Role)
	}

	d := live("700004")
	sess := storage.Session{ID: randID("sid_"), SecretHash: []byte(randID("sec_")), Kind: storage.SessionEngineer, Subject: "eng-1",
		Issuer: "https://support", Claims: []byte(`{}`), AuthTime: t0, CreatedAt: t0, LastSeenAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	code := storage.AuthCode{Hash: []byte(randID("code_")), ClientID: "web", RedirectURI: "https://p/cb", CodeChallenge: "ch",
		SessionID: sess.ID, GrantID: d.Token.GrantID, TenantID: "acme", AuthTime: t0, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
	putCode(t, s, code, now)
	var fromCode storage.Issue
	if _, _, err := s.ExchangeAuthCode(ctx, code.Hash, code, now, ev("", "grant.revoke"), func(g storage.Grant, c storage.AuthCode) (storage.Issue, error) {
		is, err := codeIssue(now)(g, c)
		fromCode = is
		return is, err
	}); err != nil {
		t.Fatal(err)
	}
	state(fromCode)
	if _, err := s.EndSession(ctx, sess.ID, now, "logout", ev("", "token.revoke")); err != nil {
		t.Fatal(err)
	}
	if state(fromCode).Token.RevokedAt.IsZero() {
		t.Fatal("a token of an ended session answered from the cache as live")
	}

	if _, err := s.SetSupportAccess(ctx, storage.Tenant{ID: "acme", SupportEnabled: false, ChangedBy: "ada", ChangedAt: now},
		ev("acme", "support_access.disable"), ev("acme", "grant.revoke")); err != nil {
		t.Fatal(err)
	}
	if state(d).TenantEnabled {
		t.Fatal("support access off answered from the cache as on")
	}
}
