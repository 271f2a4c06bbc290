package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/actas/actas/storage"
)

// testApproval: approvals by distinct admins complete a grant, whose code
// is issued once; refusal and timeout end awaiting grants only; the
// granter hears the decision.
func testApproval(t *testing.T, s storage.Store) {
	ctx := context.Background()
	enable(t, s, "acme")
	awaitingGrant := func(deadline time.Time) storage.Grant {
		g := newGrant("acme", "")
		g.CodeHash, g.CodeExpiresAt = nil, time.Time{}
		g.GranterClaims = []byte(`{"email":"granter@acme.example"}`)
		g.ApprovalRule, g.ApprovalsNeeded, g.ApprovalDeadline = "two-person", 2, deadline
		return mustCreate(t, s, g)
	}
	g := awaitingGrant(t0.Add(time.Hour))
	if got, _ := s.Grant(ctx, "acme", g.ID); got.Status(t0) != storage.StatusAwaiting || got.ApprovalsNeeded != 2 {
		t.Fatalf("awaiting grant: %+v", got)
	}
	approve := func(who string) (bool, error) {
		e := ev("acme", "grant.approve")
		e.Target, e.Notify = g.ID, storage.NotifyApprovalDecided
		return s.ApproveGrant(ctx, "acme", g.ID, who, t0.Add(time.Minute), t0.Add(2*time.Hour), e)
	}
	if done, err := approve("bob"); err != nil || done {
		t.Fatalf("first of two approvals: %v %v", done, err)
	}
	if done, _ := approve("bob"); done {
		t.Fatal("the same approver counted twice")
	}
	if done, err := approve("carol"); err != nil || !done {
		t.Fatalf("second approver: %v %v", done, err)
	}
	if _, err := approve("dan"); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("approving an approved grant: %v", err)
	}
	if got, _ := s.Grant(ctx, "acme", g.ID); got.Status(t0.Add(time.Minute)) != storage.StatusPending || got.ApprovedAt.IsZero() {
		t.Fatalf("approved grant: %+v", got)
	}
	if err := s.IssueApprovedCode(ctx, "acme", g.ID, []byte("code-hash"), t0.Add(time.Minute), ev("acme", "grant.code_issue")); err != nil {
		t.Fatal(err)
	}
	if err := s.IssueApprovedCode(ctx, "acme", g.ID, []byte("other"), t0.Add(time.Minute), ev("acme", "grant.code_issue")); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("second code: %v", err)
	}
	if err := s.EndAwaiting(ctx, "acme", g.ID, "bob", "approval_denied", t0, ev("acme", "grant.revoke")); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("refusing an approved grant: %v", err)
	}
	msgs, _ := s.ClaimOutbox(ctx, t0.Add(time.Hour), time.Minute, 100)
	toGranter := 0
	for _, m := range msgs {
		if m.Kind == storage.NotifyApprovalDecided && m.Destination == "granter@acme.example" {
			toGranter++
		}
	}
	if toGranter != 1 {
		t.Fatalf("granter notified %d times, want once: when the approval completed", toGranter)
	}

	late := awaitingGrant(t0.Add(time.Minute))
	if n, err := s.ExpireApprovals(ctx, t0.Add(2*time.Minute), 10, ev("", "grant.revoke")); err != nil || n != 1 {
		t.Fatalf("expire approvals: %d %v", n, err)
	}
	if got, _ := s.Grant(ctx, "acme", late.ID); got.RevokedAt.IsZero() || got.RevokeReason != "approval_timeout" {
		t.Fatalf("timed-out grant: %+v", got)
	}
}
