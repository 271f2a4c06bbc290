// Package storetest is the conformance suite every storage.Store backend
// must pass; SQLite and PostgreSQL run the very same tests.
package storetest

import (
	"context"
	"crypto/rand"
	"fmt"
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
		{"grant/concurrent, some codes colliding, with redemptions", func(t *testing.T, s storage.Store) { testConcurrentGrants(t, s, auditKey) }},
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
		{"notify/dead letter once, out of the backlog", testDeadLetter},
		{"notify/expiries recorded once", testExpiries},
		{"retention/engineers and archive", testRetention},
		{"retention/writes go on between its batches", testRetentionYieldsToWriters},
		{"retention/batches keep the chain verifiable", func(t *testing.T, s storage.Store) { testRetentionBatches(t, s, auditKey) }},
		{"dpop/proof once across writers, again after expiry", testProofReplay},
		{"ssf/streams, held and polled signals", testStreams},
		{"directory/users, tokens and the live ceiling", testDirectory},
		{"approval/distinct approvers, code once, refusal and timeout", testApproval},
		{"op/sessions: idle, absolute, end revokes and logs out", testSessions},
		{"tokens/no cached state outlives a change", testStateCache},
		{"op/auth codes: once under a race, reuse ends the grant, wrong binding burns", testAuthCodes},
		{"audit/chain under concurrent writers", func(t *testing.T, s storage.Store) { testChainConcurrency(t, s, auditKey) }},
		{"audit/chain under racing redemptions, some refused part-way", func(t *testing.T, s storage.Store) { testRedeemChain(t, s, auditKey) }},
		{"tokens/first uses batched with redemptions", func(t *testing.T, s storage.Store) { testFirstUseRacingRedemptions(t, s, auditKey) }},
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
	if _, err := s.SetSupportAccess(context.Background(), storage.Tenant{ID: tenant, SupportEnabled: true, ChangedBy: "admin", ChangedAt: t0}, ev(tenant, "support_access.enable"), ev(tenant, "grant.revoke")); err != nil {
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

func issueFor(clientID string, now time.Time) func(storage.Grant, storage.Tenant) (storage.Issue, error) {
	return func(g storage.Grant, _ storage.Tenant) (storage.Issue, error) {
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
	want, err := s.Tenant(context.Background(), p.TenantID)
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.Redeem(context.Background(), p, func(g storage.Grant, tn storage.Tenant) (storage.Issue, error) {
		if tn.ID != want.ID || !tn.SupportEnabled || tn.AllowNonAdminGrants != want.AllowNonAdminGrants {
			t.Errorf("issue saw tenant %+v, want %+v", tn, want)
		}
		is, err := issueFor("cli", p.Now)(g, tn)
		got = is
		return is, err
	})
	if err != nil {
		t.Fatalf("redeem: %v", err)
	}
	return g, got
}
