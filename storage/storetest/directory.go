package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/actas/actas/storage"
)

// testDirectory: SCIM tokens by hash, users unique by userName per tenant,
// and the role change of a user's new state: capped grants and tokens,
// ended grants, admin addresses, known roles.
func testDirectory(t *testing.T, s storage.Store) {
	ctx := context.Background()
	tok := storage.SCIMToken{ID: "scim_1", TenantID: "acme", Issuer: "https://customer", Hash: []byte("h1"), CreatedBy: "a", CreatedAt: t0}
	if err := s.CreateSCIMToken(ctx, tok, ev("acme", "scim_token.create")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.SCIMTokenByHash(ctx, []byte("h1")); err != nil || got.TenantID != "acme" || got.Issuer != "https://customer" {
		t.Fatalf("token by hash: %+v %v", got, err)
	}
	if err := s.RevokeSCIMToken(ctx, "other", "scim_1", ev("other", "scim_token.revoke")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("another tenant revokes: %v", err)
	}

	enable(t, s, "acme")
	mustCreate(t, s, newGrant("acme", "101010")) // granted by user-1 as manage
	_, is := redeem(t, s, redeemParams("acme", "101010", "eng-1", t0.Add(time.Minute)))
	now := t0.Add(2 * time.Minute)
	u := storage.DirectoryUser{ID: "u1", TenantID: "acme", UserName: "user1@acme", ExternalID: "user-1", Subject: "user-1",
		Issuer: "https://customer", Active: true, Role: "monitor", Emails: []string{"u1@acme"}, CreatedAt: now, UpdatedAt: now}
	capEv := ev("acme", "grant.cap")
	ch := storage.RoleChange{TenantID: "acme", Sub: "user-1", Iss: "https://customer", Role: "monitor",
		Above: []string{"manage", "admin"}, AdminEmail: "", Now: now, Reason: "directory", GrantEvent: capEv}
	if err := s.PutDirectoryUser(ctx, u, true, ch, ev("acme", "directory.user.put")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDirectoryUser(ctx, storage.DirectoryUser{ID: "u2", TenantID: "acme", UserName: "user1@acme", CreatedAt: now, UpdatedAt: now},
		true, storage.RoleChange{}, ev("acme", "directory.user.put")); !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("duplicate userName: %v", err)
	}
	st, err := s.TokenState(ctx, is.Token.JTI)
	if err != nil || st.Token.Role != "monitor" || st.Grant.Role != "monitor" || !st.Token.RevokedAt.IsZero() {
		t.Fatalf("capped token state: %+v %v", st.Token, err)
	}
	if auditCount(t, s, "acme", "grant.cap") != 1 {
		t.Fatal("no grant.cap event")
	}
	if r, _ := s.KnownRole(ctx, "acme", "user-1", "https://customer"); r != "monitor" {
		t.Fatalf("known role %q", r)
	}
	if l, total, err := s.DirectoryUsers(ctx, "acme", "user1@acme", 1, 10); err != nil || total != 1 || len(l) != 1 || l[0].Emails[0] != "u1@acme" {
		t.Fatalf("list: %v %d %v", l, total, err)
	}

	// An admin address comes and goes with the role.
	admin := storage.RoleChange{TenantID: "acme", Sub: "boss", Iss: "https://customer", Role: "admin", AdminEmail: "boss@acme", Now: now}
	if err := s.ApplyRole(ctx, admin); err != nil {
		t.Fatal(err)
	}
	if n := adminCount(t, s, "acme"); n != 1 {
		t.Fatalf("admins %d, want 1", n)
	}
	admin.Role, admin.AdminEmail = "monitor", ""
	s.ApplyRole(ctx, admin)
	if n := adminCount(t, s, "acme"); n != 0 {
		t.Fatalf("a demoted admin keeps an admin address (%d)", n)
	}

	// Deletion ends every grant of the user, through the one end path.
	end := storage.RoleChange{TenantID: "acme", Sub: "user-1", Iss: "https://customer", EndAll: true, Now: now, Reason: "directory",
		GrantEvent: ev("acme", "grant.revoke")}
	if err := s.DeleteDirectoryUser(ctx, "acme", "u1", end, ev("acme", "directory.user.delete")); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.TokenState(ctx, is.Token.JTI); st.Token.RevokedAt.IsZero() || st.Grant.RevokedAt.IsZero() {
		t.Fatal("a deleted user's grant is still live")
	}
	if _, err := s.DirectoryUser(ctx, "acme", "u1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("deleted user: %v", err)
	}
}

// adminCount counts the tenant's admin addresses: a toggle's recipients.
func adminCount(t *testing.T, s storage.Store, tenant string) int {
	t.Helper()
	ctx := context.Background()
	if _, err := s.SetSupportAccess(ctx, storage.Tenant{ID: tenant, SupportEnabled: true, ChangedBy: "x", ChangedAt: t0, Issuer: "https://customer"},
		storage.AuditEvent{Time: t0, TenantID: tenant, ActorType: storage.ActorSystem, ActorID: "t", Action: "support_access.update",
			Outcome: "success", Notify: storage.NotifyToggle}, ev(tenant, "grant.revoke")); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.ClaimOutbox(ctx, t0.Add(time.Hour), time.Hour, 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range msgs {
		if m.Channel == "email" {
			n++
		}
	}
	return n
}
