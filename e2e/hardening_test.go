package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// sign mints a token with the IdP's own signing key (so its signature is
// genuine) for claims the login flow would never produce, with header typ.
func (p *idp) sign(t *testing.T, claims jwt.MapClaims, typ string) string {
	t.Helper()
	kid, err := p.m.Keypair.KeyID()
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = kid
	if typ != "" {
		tok.Header["typ"] = typ
	}
	s, err := tok.SignedString(p.m.Keypair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// idClaims are the claims of a well-formed engineer ID token from p.
func (p *idp) idClaims(sub string) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"iss": p.m.Issuer(), "aud": "actas", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"groups": []string{"support"}, "email": "x@support.example"}
	if sub != "" {
		c["sub"] = sub
	}
	return c
}

// Issue 15, defects 1 and 10: actor tokens signed by the real support IdP
// but lacking what an ID token must have are refused before the code is
// touched; the code still redeems afterwards for a proper engineer.
func TestActorTokenStrictness(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	_, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"sandbox"}, "expires_in": 3600})

	noSub := f.sup.idClaims("")
	noIat := f.sup.idClaims("eve")
	delete(noIat, "iat")
	otherAzp := f.sup.idClaims("eve")
	otherAzp["aud"], otherAzp["azp"] = []string{"actas", "other"}, "other"
	multiAudNoAzp := f.sup.idClaims("eve")
	multiAudNoAzp["aud"] = []string{"actas", "other"}
	cases := []struct {
		name string
		tok  string
	}{
		{"no sub", f.sup.sign(t, noSub, "JWT")},
		{"no iat", f.sup.sign(t, noIat, "JWT")},
		{"azp is another client", f.sup.sign(t, otherAzp, "JWT")},
		{"several audiences, no azp", f.sup.sign(t, multiAudNoAzp, "JWT")},
		{"typ at+jwt", f.sup.sign(t, f.sup.idClaims("eve"), "at+jwt")},
	}
	for _, tc := range cases {
		t.Run("fail/"+tc.name, func(t *testing.T) {
			r := f.exchange(t, "acme", code, tc.tok)
			if r.status != 400 || r.str("error") != "invalid_request" || !strings.Contains(r.str("error_description"), "actor_token") {
				t.Fatalf("got %d %s, want invalid_request naming actor_token", r.status, r.raw)
			}
		})
	}
	ok := f.sup.idClaims("alice")
	ok["aud"], ok["azp"] = []string{"actas", "other"}, "actas"
	if r := f.exchange(t, "acme", code, f.sup.sign(t, ok, "JWT")); r.status != 200 {
		t.Fatalf("the code must still redeem after refused actor tokens: %d %s", r.status, r.raw)
	}
}

// Issue 15, defect 2: a customer token without sub acts as no one.
func TestCustomerTokenWithoutSub(t *testing.T) {
	f := newFixture(t)
	c := f.cust.idClaims("")
	c["org_id"], c["role"] = "acme", "admin"
	r := f.api(t, "PUT", "/api/v1/tenants/acme/support-access", f.cust.sign(t, c, "JWT"), map[string]any{"enabled": true})
	if r.status != 401 || r.str("error") != "unauthorized" {
		t.Fatalf("got %d %s, want 401", r.status, r.raw)
	}
	admin := f.admin(t, "acme")
	if r := f.api(t, "GET", "/api/v1/tenants/acme/support-access", admin, nil); r.body["enabled"] != false {
		t.Fatalf("the refused request changed the tenant: %s", r.raw)
	}
}

// Issue 15, defect 5: saving settings without "kinds" keeps what each
// group receives.
func TestNotificationSettingsWithoutKinds(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	before := f.api(t, "GET", "/api/v1/tenants/acme/notifications", admin, nil)
	r := f.api(t, "PUT", "/api/v1/tenants/acme/notifications", admin, map[string]any{"emails": []string{"ops@acme.example"}, "webhook_url": ""})
	if r.status != 200 {
		t.Fatalf("put: %d %s", r.status, r.raw)
	}
	after := f.api(t, "GET", "/api/v1/tenants/acme/notifications", admin, nil)
	kinds := after.body["kinds"].(map[string]any)
	for _, group := range []string{"admins", "emails", "webhook"} {
		list, _ := kinds[group].([]any)
		found := false
		for _, k := range list {
			found = found || k == "lockout"
		}
		if !found {
			t.Fatalf("group %s lost the lockout alerts: before %s, after %s", group, before.raw, after.raw)
		}
	}
}

// Issue 15, defect 6: an engineer outside the required groups gets the
// same answer for a live code as for a wrong one, and their attempts never
// count toward the tenant's lockout.
func TestEngineerRefusedBeforeCode(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	_, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"sandbox"}, "expires_in": 3600})
	outsider := f.engineer(t, "mallory", "sales")
	wrong := "000000"
	if code == wrong {
		wrong = "000001"
	}
	live := f.exchange(t, "acme", code, outsider)
	guess := f.exchange(t, "acme", wrong, outsider)
	if live.status != guess.status || live.str("error") != guess.str("error") || live.str("error_description") != guess.str("error_description") {
		t.Fatalf("live code and wrong code answer differently:\n%s\n%s", live.raw, guess.raw)
	}
	for i := 0; i < 10; i++ { // twice the policy's max_failures
		f.exchange(t, "acme", wrong, outsider)
	}
	if r := f.exchange(t, "acme", code, f.engineer(t, "alice")); r.status != 200 {
		t.Fatalf("an outsider's attempts voided the tenant's codes: %d %s", r.status, r.raw)
	}
}

// Issue 15, defect 7: an unknown token_type_hint is ignored (RFC 7009
// §2.1) and the token is revoked.
func TestRevokeUnknownHint(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	_, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"sandbox"}, "expires_in": 3600})
	at := f.exchange(t, "acme", code, f.engineer(t, "alice")).str("access_token")
	r := f.form(t, "/revoke", url.Values{"token": {at}, "token_type_hint": {"id_token"}}, "product", productSecret)
	if r.status != 200 {
		t.Fatalf("revoke with an unknown hint: %d %s", r.status, r.raw)
	}
	if f.active(t, at) {
		t.Fatal("the token is still active after revocation with an unknown hint")
	}
}

// Issue 15, defect 8: non-canonical paths get a JSON 4xx, not a bodyless
// redirect.
func TestNonCanonicalPaths(t *testing.T) {
	f := newFixture(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"//jwks", "/api/v1/tenants/acme/../acme/grants", "/token/", "/./introspect"} {
		res, err := noRedirect.Get(f.base + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode < 400 || res.StatusCode >= 500 || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET %s: %d %q, want a JSON 4xx", p, res.StatusCode, res.Header.Get("Content-Type"))
		}
	}
}

// Issue 15: /metrics on its own listener, with the operational series;
// /readyz answers 503 from the moment SIGTERM starts the drain, while
// requests are still served.
func TestMetricsListenerAndDrain(t *testing.T) {
	cust, sup := startIDP(t), startIDP(t)
	dir := t.TempDir()
	listen, metrics := freePort(t), freePort(t)
	cfg := writeConfig(t, dir, listen, "sqlite://"+filepath.Join(dir, "actas.db"), cust, sup, testPolicy)
	extra := fmt.Sprintf("metrics_listen: %s\ndrain_delay: 2s\n", metrics)
	if err := appendFile(cfg, extra); err != nil {
		t.Fatal(err)
	}
	f := &fixture{server: startServer(t, cfg, listen), cust: cust, sup: sup}
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false) // fetches the customer IdP's JWKS

	if r := do(t, mustGet(f.base+"/metrics")); r.status != 404 {
		t.Fatalf("/metrics on the public listener: %d", r.status)
	}
	res, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, series := range []string{"actas_build_info{", "actas_outbox_backlog ", "actas_tenant_lockouts_total ",
		"actas_upstream_jwks_fetches_total{", "go_sql_open_connections{", `route="/api/v1/tenants/{tenant}/support-access"`} {
		if !strings.Contains(string(body), series) {
			t.Errorf("metrics lack %s", series)
		}
	}

	f.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	if r := do(t, mustGet(f.base+"/readyz")); r.status != 503 || r.str("status") != "draining" {
		t.Fatalf("/readyz while draining: %d %s", r.status, r.raw)
	}
	if r := do(t, mustGet(f.base+"/jwks")); r.status != 200 {
		t.Fatalf("requests must still be served while draining: %d", r.status)
	}
	select {
	case err := <-f.done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not stop after the drain")
	}
	f.cmd = nil
}

func appendFile(path, text string) error {
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := fh.WriteString(text); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

// Issue 16: the grant list pages with an opaque cursor; every grant is
// reachable, none twice.
func TestGrantListPages(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	want := map[string]bool{}
	for i := 0; i < 7; i++ {
		id, _ := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
		want[id] = true
	}
	seen, cursor, pages := map[string]bool{}, "", 0
	for {
		path := "/api/v1/tenants/acme/grants?limit=3"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		r := f.api(t, "GET", path, admin, nil)
		if r.status != 200 {
			t.Fatalf("page: %d %s", r.status, r.raw)
		}
		pages++
		for _, g := range r.body["grants"].([]any) {
			id := g.(map[string]any)["id"].(string)
			if seen[id] {
				t.Fatalf("grant %s listed twice", id)
			}
			seen[id] = true
		}
		if cursor = r.str("next_cursor"); cursor == "" || pages > 5 {
			break
		}
	}
	if len(seen) != len(want) || pages != 3 {
		t.Fatalf("%d pages, %d grants seen, want 3 pages and %d", pages, len(seen), len(want))
	}
	if r := f.api(t, "GET", "/api/v1/tenants/acme/grants?cursor=bogus", admin, nil); r.status != 400 {
		t.Fatalf("forged cursor: %d", r.status)
	}
}

// Issue 14: the policy's rules govern turning support access on; turning
// it off is never refused.
func TestToggleGovernedByPolicy(t *testing.T) {
	f := newFixture(t)
	free := f.cust.token(t, &testUser{Sub: "free-admin", OrgID: "freeco", Role: "admin", Plan: "free", Email: "a@freeco.example"})
	r := f.api(t, "PUT", "/api/v1/tenants/freeco/support-access", free, map[string]any{"enabled": true})
	if r.status != 403 || r.str("rule") != "no-free-plans" {
		t.Fatalf("free-plan admin turning support on: %d %s", r.status, r.raw)
	}
	if r := f.api(t, "GET", "/api/v1/tenants/freeco/support-access", free, nil); r.body["enabled"] != false {
		t.Fatalf("a refused toggle changed the tenant: %s", r.raw)
	}
	if r := f.api(t, "PUT", "/api/v1/tenants/freeco/support-access", free, map[string]any{"enabled": false}); r.status != 200 {
		t.Fatalf("turning support off must never be refused: %d %s", r.status, r.raw)
	}
	var denied bool
	for _, ev := range f.api(t, "GET", "/api/v1/tenants/freeco/audit", free, nil).body["events"].([]any) {
		e := ev.(map[string]any)
		denied = denied || (e["action"] == "support_access.enable" && e["outcome"] == "denied")
	}
	if !denied {
		t.Fatal("the refused toggle is not in the audit log")
	}
}

// Issue 14: with two customer issuers, a tenant belongs to the one whose
// admin enabled it; the other's tokens for the same tenant id are refused.
func TestTenantBoundToIssuer(t *testing.T) {
	cust, cust2, sup := startIDP(t), startIDP(t), startIDP(t)
	dir := t.TempDir()
	listen := freePort(t)
	cfg := writeConfig(t, dir, listen, "sqlite://"+filepath.Join(dir, "actas.db"), cust, sup, testPolicy)
	b, _ := os.ReadFile(cfg)
	second := fmt.Sprintf("  - issuer: %s\n    audience: actas\n    tenant_claim: org_id\n    role_claim: role\nclients:\n", cust2.m.Issuer())
	os.WriteFile(cfg, []byte(strings.Replace(string(b), "clients:\n", second, 1)), 0o600)
	f := &fixture{server: startServer(t, cfg, listen), cust: cust, sup: sup}

	owner := f.admin(t, "acme")
	f.enable(t, "acme", owner, false)
	intruder := cust2.token(t, &testUser{Sub: "mallory", OrgID: "acme", Role: "admin", Plan: "enterprise", Email: "m@evil.example"})
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/v1/tenants/acme/support-access"},
		{"GET", "/api/v1/tenants/acme/grants"},
		{"POST", "/api/v1/tenants/acme/grants"},
		{"PUT", "/api/v1/tenants/acme/support-access"},
	} {
		var body any
		if c.method != "GET" {
			body = map[string]any{"enabled": false, "role": "monitor", "environments": []string{"sandbox"}}
		}
		if r := f.api(t, c.method, c.path, intruder, body); r.status != 403 || r.str("error") != "tenant_bound" {
			t.Fatalf("%s %s by another issuer's admin: %d %s", c.method, c.path, r.status, r.raw)
		}
	}
	if r := f.api(t, "GET", "/api/v1/tenants/acme/support-access", owner, nil); r.body["enabled"] != true {
		t.Fatalf("the tenant changed: %s", r.raw)
	}
	// The second issuer keeps its own tenants.
	other := cust2.token(t, &testUser{Sub: "olga", OrgID: "globex", Role: "admin", Plan: "enterprise", Email: "o@globex.example"})
	f.enable(t, "globex", other, false)
}
