package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scim sends a SCIM request as an IdP would (application/scim+json).
func (s *server) scim(t *testing.T, method, path, bearer string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.base+"/scim/v2/acme"+path, rd)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("SCIM %s %s: not JSON: %s", method, path, raw)
		}
		if res.StatusCode >= 400 && (out["schemas"] == nil || out["status"] != itoa(res.StatusCode)) {
			t.Fatalf("SCIM error not in RFC 7644 §3.12 format: %s", raw)
		}
	}
	return res.StatusCode, out
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestSCIMDirectory: the customer's directory is the live ceiling.
// Deactivating a granter ends their grants at once; demoting caps live
// tokens; directory admins who never signed in get the toggle mail, and a
// demoted admin does not.
func TestSCIMDirectory(t *testing.T) {
	mb := startMailbox(t)
	f := newFixtureWith(t, testPolicy, mb.smtpConfig())
	ada := f.admin(t, "acme") // sub admin-of-acme
	r := f.api(t, "POST", "/api/v1/tenants/acme/scim-tokens", ada, nil)
	tok := r.str("token")
	if r.status != 201 || !strings.HasPrefix(tok, "actas_scim_") {
		t.Fatalf("scim token: %d %s", r.status, r.raw)
	}
	member := f.cust.token(t, &testUser{Sub: "mem", OrgID: "acme", Role: "monitor", Email: "mem@acme.example"})
	if r := f.api(t, "POST", "/api/v1/tenants/acme/scim-tokens", member, nil); r.status != 403 {
		t.Fatalf("non-admin creates a SCIM token: %d", r.status)
	}
	if st, _ := f.scim(t, "GET", "/Users", "", nil); st != 401 {
		t.Fatalf("no bearer: %d", st)
	}
	if st, _ := f.scim(t, "GET", "/Users", "actas_scim_forged", nil); st != 401 {
		t.Fatalf("forged bearer: %d", st)
	}

	// Okta creates ada (matching her token's sub via externalId) and
	// carol, an admin who never signed in.
	user := func(userName, ext, role, email string) map[string]any {
		return map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": userName,
			"externalId": ext, "name": map[string]any{"givenName": "X", "familyName": "Y"}, "active": true,
			"emails": []map[string]any{{"value": email, "primary": true, "type": "work"}},
			"roles":  []map[string]any{{"value": role, "primary": true}}, "locale": "en-US"}
	}
	st, adaU := f.scim(t, "POST", "/Users", tok, user("ada@acme.example", "admin-of-acme", "admin", "ada@acme.example"))
	if st != 201 || adaU["id"] == nil {
		t.Fatalf("create ada: %d %v", st, adaU)
	}
	_, carol := f.scim(t, "POST", "/Users", tok, user("carol@acme.example", "carol", "admin", "carol@acme.example"))
	_, dave := f.scim(t, "POST", "/Users", tok, user("dave@acme.example", "dave", "admin", "dave@acme.example"))
	if st, _ := f.scim(t, "POST", "/Users", tok, user("carol@acme.example", "x", "admin", "c2@acme.example")); st != 409 {
		t.Fatalf("duplicate userName: %d", st)
	}
	if st, l := f.scim(t, "GET", `/Users?filter=userName+eq+"carol@acme.example"`, tok, nil); st != 200 || l["totalResults"] != 1.0 {
		t.Fatalf("filter: %d %v", st, l)
	}
	// Entra demotes dave with a PATCH of roles (path with a filter).
	if st, d := f.scim(t, "PATCH", "/Users/"+dave["id"].(string), tok, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []map[string]any{{"op": "Replace", "path": `roles[primary eq "True"].value`, "value": "monitor"}}}); st != 200 || d["roles"] == nil {
		t.Fatalf("demote dave: %d %v", st, d)
	}

	// The toggle mail reaches every admin, including carol who never
	// signed in; not dave, demoted.
	f.enable(t, "acme", ada, false)
	deadline := time.Now().Add(10 * time.Second)
	var to []string
	for time.Now().Before(deadline) {
		to = nil
		for _, m := range mb.all() {
			to = append(to, m.to...)
		}
		if slices.Contains(to, "carol@acme.example") && slices.Contains(to, "ada@acme.example") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !slices.Contains(to, "carol@acme.example") || !slices.Contains(to, "ada@acme.example") || slices.Contains(to, "dave@acme.example") {
		t.Fatalf("toggle mail went to %v", to)
	}

	// Ada grants admin access; an engineer redeems.
	_, code := f.grant(t, "acme", ada, map[string]any{"role": "admin", "environments": []string{"sandbox"}})
	tr := f.exchange(t, "acme", code, f.engineer(t, "eng-scim"))
	at, rt := tr.str("access_token"), tr.str("refresh_token")
	if ir := f.introspect(t, at); ir.body["active"] != true || ir.body["roles"].([]any)[0] != "admin" {
		t.Fatalf("setup: %s", ir.raw)
	}
	// Demotion (Okta: PUT replace with a lower role): never above it.
	adaID := adaU["id"].(string)
	if st, _ := f.scim(t, "PUT", "/Users/"+adaID, tok, user("ada@acme.example", "admin-of-acme", "manage", "ada@acme.example")); st != 200 {
		t.Fatalf("demote ada: %d", st)
	}
	ir := f.introspect(t, at)
	if ir.body["active"] != true || ir.body["roles"].([]any)[0] != "manage" || strings.Contains(ir.str("scope"), "admin") {
		t.Fatalf("after demotion the token must be capped to manage: %s", ir.raw)
	}
	rr := f.form(t, "/token", map[string][]string{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"actas-cli"}}, "", "")
	if rr.status != 200 || !strings.Contains(rr.str("scope"), "write") || strings.Contains(rr.str("scope"), "admin") {
		t.Fatalf("refresh after demotion: %d %s", rr.status, rr.raw)
	}
	at = rr.str("access_token")
	// Deactivation (Okta: PATCH replace without path): the token is
	// inactive at the very next introspection.
	if st, _ := f.scim(t, "PATCH", "/Users/"+adaID, tok, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []map[string]any{{"op": "replace", "value": map[string]any{"active": false}}}}); st != 200 {
		t.Fatalf("deactivate: %d", st)
	}
	if f.active(t, at) {
		t.Fatal("the token of a deactivated granter's grant is still active")
	}
	if r := f.api(t, "GET", "/api/v1/tenants/acme/grants", ada, nil); r.status != 401 {
		t.Fatalf("a deactivated user's still-valid token acts for the tenant: %d %s", r.status, r.raw)
	}
	// Deleting carol removes her admin address; Entra's "False" string
	// for active is understood.
	if st, _ := f.scim(t, "PATCH", "/Users/"+carol["id"].(string), tok, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []map[string]any{{"op": "Replace", "path": "active", "value": "False"}}}); st != 200 {
		t.Fatalf("entra deactivate: %d", st)
	}
	if st, _ := f.scim(t, "DELETE", "/Users/"+carol["id"].(string), tok, nil); st != 204 {
		t.Fatalf("delete: %d", st)
	}
	if st, _ := f.scim(t, "GET", "/Users/"+carol["id"].(string), tok, nil); st != 404 {
		t.Fatalf("deleted user: %d", st)
	}
	for _, p := range []string{"/ServiceProviderConfig", "/ResourceTypes", "/Schemas"} {
		if st, _ := f.scim(t, "GET", p, tok, nil); st != 200 {
			t.Fatalf("%s: %d", p, st)
		}
	}
	if st, e := f.scim(t, "GET", `/Users?filter=emails+co+"x"`, tok, nil); st != 400 || e["scimType"] != "invalidFilter" {
		t.Fatalf("unsupported filter: %d %v", st, e)
	}
	// Revoked SCIM tokens stop working (bob, another admin, revokes it).
	bob := f.cust.token(t, &testUser{Sub: "bob", OrgID: "acme", Role: "admin", Plan: "enterprise", Email: "bob@acme.example"})
	if r := f.api(t, "DELETE", "/api/v1/tenants/acme/scim-tokens/"+r.str("id"), bob, nil); r.status != 204 {
		t.Fatalf("revoke scim token: %d %s", r.status, r.raw)
	}
	if st, _ := f.scim(t, "GET", "/Users", tok, nil); st != 401 {
		t.Fatalf("revoked token: %d", st)
	}
}

// TestDemotionByToken: a fresh customer token with a lower role caps the
// user's live grants as the directory would.
func TestDemotionByToken(t *testing.T) {
	f := newFixture(t)
	ada := f.admin(t, "acme")
	f.enable(t, "acme", ada, false)
	_, code := f.grant(t, "acme", ada, map[string]any{"role": "admin", "environments": []string{"sandbox"}})
	at := f.exchange(t, "acme", code, f.engineer(t, "eng-d")).str("access_token")
	demoted := f.cust.token(t, &testUser{Sub: "admin-of-acme", OrgID: "acme", Role: "monitor", Plan: "enterprise", Email: "admin@acme.example"})
	f.api(t, "GET", "/api/v1/tenants/acme/grants", demoted, nil)
	if ir := f.introspect(t, at); ir.body["active"] != true || ir.body["roles"].([]any)[0] != "monitor" || ir.str("scope") != "read" {
		t.Fatalf("after a demoted token: %s", ir.raw)
	}
}

// A directory that sends no roles (Okta's default SCIM app) changes no
// grant: only deactivation does.
func TestSCIMWithoutRoles(t *testing.T) {
	f := newFixture(t)
	ada := f.admin(t, "acme")
	f.enable(t, "acme", ada, false)
	tok := f.api(t, "POST", "/api/v1/tenants/acme/scim-tokens", ada, nil).str("token")
	_, code := f.grant(t, "acme", ada, map[string]any{"role": "admin", "environments": []string{"sandbox"}})
	at := f.exchange(t, "acme", code, f.engineer(t, "eng-nr")).str("access_token")
	st, u := f.scim(t, "POST", "/Users", tok, map[string]any{"userName": "ada@acme.example", "externalId": "admin-of-acme",
		"active": true, "emails": []map[string]any{{"value": "ada@acme.example", "primary": true}}})
	if st != 201 {
		t.Fatalf("create: %d %v", st, u)
	}
	if ir := f.introspect(t, at); ir.body["active"] != true || ir.body["roles"].([]any)[0] != "admin" {
		t.Fatalf("a roleless directory user changed a grant: %s", ir.raw)
	}
	if r := f.api(t, "GET", "/api/v1/tenants/acme/grants", ada, nil); r.status != 200 {
		t.Fatalf("the admin lost access: %d", r.status)
	}
	f.scim(t, "PATCH", "/Users/"+u["id"].(string), tok, map[string]any{
		"Operations": []map[string]any{{"op": "replace", "path": "active", "value": false}}})
	if f.active(t, at) {
		t.Fatal("deactivation without roles did not end the grant")
	}
}
