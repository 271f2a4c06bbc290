package e2e

import (
	"strings"
	"testing"
	"time"
)

const approvalPolicy = `approval:
  - name: prod-admin-needs-second-admin
    require_if: 'request.role == "admin" && "production" in request.environments'
    approvers: 1
    within: 3s
`

// TestApproval: a grant the policy's approval rules match waits for
// another admin: no code until approved, the granter cannot approve it,
// the code is fetched once, a refusal or a timeout ends it.
func TestApproval(t *testing.T) {
	f := newFixtureWith(t, testPolicy+approvalPolicy, "")
	ada := f.admin(t, "acme")
	bob := f.cust.token(t, &testUser{Sub: "bob", OrgID: "acme", Role: "admin", Plan: "enterprise", Email: "bob@acme.example"})
	member := f.cust.token(t, &testUser{Sub: "mem", OrgID: "acme", Role: "monitor", Email: "mem@acme.example"})
	f.enable(t, "acme", ada, false)
	prodAdmin := map[string]any{"role": "admin", "environments": []string{"production"}}

	r := f.api(t, "POST", "/api/v1/tenants/acme/grants", ada, prodAdmin)
	g, _ := r.body["grant"].(map[string]any)
	if r.status != 201 || r.body["code"] != nil || g["status"] != "awaiting_approval" || g["approval"] == nil {
		t.Fatalf("grant needing approval: %d %s", r.status, r.raw)
	}
	id := g["id"].(string)
	path := "/api/v1/tenants/acme/grants/" + id
	if r := f.api(t, "POST", path+"/code", ada, nil); r.status != 409 {
		t.Fatalf("code before approval: %d %s", r.status, r.raw)
	}
	if r := f.api(t, "POST", path+"/approve", ada, nil); r.status != 409 || r.str("error") != "own_grant" {
		t.Fatalf("self-approval: %d %s", r.status, r.raw)
	}
	if r := f.api(t, "POST", path+"/approve", member, nil); r.status != 403 && r.status != 404 {
		t.Fatalf("a non-admin approves: %d %s", r.status, r.raw)
	}
	r = f.api(t, "POST", path+"/approve", bob, nil)
	if ag, _ := r.body["grant"].(map[string]any); r.status != 200 || ag["status"] != "pending" {
		t.Fatalf("approve: %d %s", r.status, r.raw)
	}
	if r := f.api(t, "POST", path+"/code", bob, nil); r.status != 403 {
		t.Fatalf("another admin fetches the code: %d %s", r.status, r.raw)
	}
	r = f.api(t, "POST", path+"/code", ada, nil)
	code := r.str("code")
	if r.status != 200 || len(code) != 6 {
		t.Fatalf("fetch code: %d %s", r.status, r.raw)
	}
	if r := f.api(t, "POST", path+"/code", ada, nil); r.status != 409 {
		t.Fatalf("second fetch: %d %s", r.status, r.raw)
	}
	if tr := f.exchange(t, "acme", code, f.engineer(t, "eng-appr")); tr.status != 200 {
		t.Fatalf("redeem the approved code: %s", tr.raw)
	}

	// Deny: the grant ends.
	_ = f.api(t, "POST", "/api/v1/tenants/acme/grants", ada, prodAdmin)
	list := f.api(t, "GET", "/api/v1/tenants/acme/grants?status=all", ada, nil)
	var denied string
	for _, it := range list.body["grants"].([]any) {
		if m := it.(map[string]any); m["status"] == "awaiting_approval" {
			denied = m["id"].(string)
		}
	}
	r = f.api(t, "POST", "/api/v1/tenants/acme/grants/"+denied+"/deny", bob, nil)
	if dg, _ := r.body["grant"].(map[string]any); r.status != 200 || dg["status"] != "revoked" || dg["revoke_reason"] != "approval_denied" {
		t.Fatalf("deny: %d %s", r.status, r.raw)
	}
	if r := f.api(t, "POST", "/api/v1/tenants/acme/grants/"+denied+"/approve", bob, nil); r.status != 409 {
		t.Fatalf("approve after deny: %d %s", r.status, r.raw)
	}

	// Timeout: unapproved past within, it cannot be approved and ends.
	r = f.api(t, "POST", "/api/v1/tenants/acme/grants", ada, prodAdmin)
	late := r.body["grant"].(map[string]any)["id"].(string)
	time.Sleep(3500 * time.Millisecond)
	if r := f.api(t, "POST", "/api/v1/tenants/acme/grants/"+late+"/approve", bob, nil); r.status != 409 {
		t.Fatalf("approve after the deadline: %d %s", r.status, r.raw)
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		r := f.api(t, "GET", "/api/v1/tenants/acme/grants/"+late, ada, nil)
		lg := r.body["grant"].(map[string]any)
		if lg["revoke_reason"] == "approval_timeout" {
			break
		}
		if lg["status"] != "expired" || time.Now().After(deadline) {
			t.Fatalf("unapproved grant after its deadline: %s", r.raw)
		}
		time.Sleep(500 * time.Millisecond)
	}
	var approvals int
	for _, ev := range f.api(t, "GET", "/api/v1/tenants/acme/audit", ada, nil).body["events"].([]any) {
		if strings.HasPrefix(ev.(map[string]any)["action"].(string), "grant.approve") {
			approvals++
		}
	}
	if approvals != 1 {
		t.Fatalf("audit: %d approvals recorded, want 1", approvals)
	}
}
