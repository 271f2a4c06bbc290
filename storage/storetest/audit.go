package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

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

// testOutbox is one scenario, step by step (written with the event,
// one claimer, retry, delivery); it reads best whole, so it stays long.
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
	setLogoutClients(s, "cli")
	enable(t, s, "acme")
	short := newGrant("acme", "500001")
	short.ExpiresAt = t0.Add(time.Hour)
	mustCreate(t, s, short)
	redeem(t, s, redeemParams("acme", "500001", "eng-1", t0)) // tokens for client "cli"
	mustCreate(t, s, newGrant("acme", "500002"))              // 24h
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
	// The client that holds its tokens hears of the expiry by back-channel logout.
	if l := claimLogouts(t, s, t0.Add(2*time.Hour)); len(l) != 1 || l[0].GrantID != short.ID || l[0].Reason != "expired" {
		t.Fatalf("logout tokens on expiry: %+v", l)
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

func testDeadLetter(t *testing.T, s storage.Store) {
	ctx := context.Background()
	s.SeeAdmin(ctx, "acme", "ada", "ada@acme.example", t0)
	enable(t, s, "acme")
	msgs, err := s.ClaimOutbox(ctx, t0.Add(time.Hour), time.Minute, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("claimed %d, %v", len(msgs), err)
	}
	if n, _ := s.OutboxBacklog(ctx); n != 1 {
		t.Fatalf("backlog %d, want 1", n)
	}
	dead := ev("acme", "notification.dead_letter")
	dead.Outcome = "failure"
	for i := 0; i < 2; i++ { // the second call changes nothing
		if err := s.DeadLetterOutbox(ctx, msgs[0].ID, t0.Add(2*time.Hour), "connection refused", dead); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.OutboxBacklog(ctx); n != 0 {
		t.Fatalf("backlog %d after dead-lettering, want 0", n)
	}
	if again, _ := s.ClaimOutbox(ctx, t0.Add(48*time.Hour), time.Minute, 10); len(again) != 0 {
		t.Fatalf("a dead letter was claimed again: %+v", again)
	}
	if n := auditCount(t, s, "acme", "notification.dead_letter"); n != 1 {
		t.Fatalf("%d dead-letter events, want 1", n)
	}
}

// testRetentionBatches: retention across many batches (the suite opens
// stores with tiny batches) archives every ended grant, prunes the audit
// up to the cut, and leaves every chain verifiable from its anchor.
func testRetentionBatches(t *testing.T, s storage.Store, key []byte) {
	ctx := context.Background()
	enable(t, s, "acme")
	for i := range 7 {
		g := mustCreate(t, s, newGrant("acme", fmt.Sprintf("71%04d", i)))
		s.RevokeGrant(ctx, "acme", g.ID, t0.Add(time.Hour), "ada", "terminated", ev("acme", "grant.revoke"))
	}
	for range 9 {
		if err := s.AppendAudit(ctx, ev("acme", "support_access.update")); err != nil {
			t.Fatal(err)
		}
	}
	now := t0.Add(100 * 24 * time.Hour)
	late := audit.Event(now, "", audit.Actor{Type: storage.ActorSystem, ID: "test"}, "acme", "support_access.update", "acme", audit.Success, nil)
	if err := s.AppendAudit(ctx, late); err != nil {
		t.Fatal(err)
	}
	sign := func(b []byte) (string, error) { return "sig", nil }
	if err := s.Checkpoint(ctx, now, sign); err != nil {
		t.Fatal(err)
	}
	r, err := s.Prune(ctx, storage.PruneParams{Now: now, Sign: sign, AuditBefore: now.Add(-time.Minute),
		ArchiveBefore: now.Add(-90 * 24 * time.Hour), EngineersBefore: now.Add(-60 * 24 * time.Hour)})
	if err != nil || r.Archived != 7 || r.AuditEvents < 9+7+7 {
		t.Fatalf("prune in batches: %+v %v", r, err)
	}
	if n, err := audit.Verify(ctx, s, key, nil); err != nil || n != 1 {
		t.Fatalf("the chain after pruning: %d events verified, %v", n, err)
	}
}

// testRetentionYieldsToWriters: retention of a large log runs in short
// transactions, so writes go on between its batches instead of waiting for
// the whole pass (the suite's stores prune 2 rows a batch). Run as one long
// transaction, no write would finish before the pass did.
func testRetentionYieldsToWriters(t *testing.T, s storage.Store) {
	ctx := context.Background()
	var old []storage.AuditEvent
	for i := 0; i < 400; i++ {
		old = append(old, storage.AuditEvent{Time: t0, TenantID: "acme", ActorType: storage.ActorSystem, ActorID: "actas", Action: "grant.create", Outcome: "success"})
	}
	if err := s.AppendAudit(ctx, old...); err != nil {
		t.Fatal(err)
	}
	var finished atomic.Bool
	var pruneErr error
	go func() {
		_, pruneErr = s.Prune(ctx, storage.PruneParams{Now: t0.Add(time.Hour), AuditBefore: t0.Add(time.Minute)})
		finished.Store(true)
	}()
	during := 0
	for !finished.Load() {
		if err := s.AppendAudit(ctx, ev("other", "grant.create")); err != nil {
			t.Fatal(err)
		}
		if !finished.Load() {
			during++
		}
	}
	if pruneErr != nil {
		t.Fatal(pruneErr)
	}
	if during == 0 {
		t.Fatal("no write finished while retention ran: it held the writer for the whole pass")
	}
	t.Logf("%d writes finished during retention", during)
}

// testRedeemChain races redemptions that succeed, fail to match and are
// refused part-way through writing their events, in two tenants: however
// they are grouped into transactions (SQLite commits them in batches, each
// in a savepoint), every chain must verify and hold exactly the events of
// the outcomes that stood.
func testRedeemChain(t *testing.T, s storage.Store, key []byte) {
	ctx := context.Background()
	tenants := []string{"acme", "beta"}
	for _, tn := range tenants {
		enable(t, s, tn)
	}
	const n = 48
	for i := 0; i < n; i++ {
		mustCreate(t, s, newGrant(tenants[i/4%2], fmt.Sprintf("7%05d", i)))
	}
	refuse := func(g storage.Grant, _ storage.Tenant) (storage.Issue, error) {
		// The first event is written, the second is refused by storage:
		// the redemption is rolled back with the event it wrote.
		return storage.Issue{Events: []storage.AuditEvent{ev(g.TenantID, "grant.redeem"), {TenantID: g.TenantID}}}, nil
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tn := tenants[i/4%2]
			code, issue, want := fmt.Sprintf("7%05d", i), issueFor("cli", t0), "ok"
			switch i % 4 {
			case 0, 1:
				code, want = "000000", "no match"
			case 2:
				issue, want = refuse, "refused"
			}
			p := redeemParams(tn, code, fmt.Sprintf("eng-%d", i), t0)
			p.MaxFailures = 1000
			_, err := s.Redeem(ctx, p, issue)
			var rf *storage.RedeemFailure
			got := "ok"
			switch {
			case errors.As(err, &rf):
				got = "no match"
			case err != nil:
				got = "refused"
			}
			mu.Lock()
			defer mu.Unlock()
			if got != want {
				t.Errorf("redemption %d: %s (%v), want %s", i, got, err, want)
			}
			outcomes[got]++
		}(i)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	verified, err := audit.Verify(ctx, s, key, nil)
	if err != nil {
		t.Fatalf("chain after racing redemptions: %v", err)
	}
	// Per tenant: the support toggle, n/2 grants; then 2 events per
	// success and 1 per failure to match.
	want := len(tenants) + n + 2*outcomes["ok"] + outcomes["no match"]
	if verified < want {
		t.Fatalf("verified %d events, want at least %d (%v)", verified, want, outcomes)
	}
	for _, tn := range tenants {
		if c := auditCount(t, s, tn, "grant.redeem"); c != outcomes["ok"]/2 {
			t.Fatalf("%s: %d grant.redeem events, want %d", tn, c, outcomes["ok"]/2)
		}
	}
}
