package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// productVerifier verifies access tokens as a product would: discovery,
// JWKS, issuer, audience and expiry, with go-oidc.
func productVerifier(t *testing.T, base string) *oidc.IDTokenVerifier {
	t.Helper()
	p, err := oidc.NewProvider(context.Background(), base)
	if err != nil {
		t.Fatal(err)
	}
	return p.Verifier(&oidc.Config{ClientID: "product", SupportedSigningAlgs: []string{"ES256"}})
}

type accessClaims struct {
	Sub string `json:"sub"`
	Act struct {
		Sub, Iss, Email string
	} `json:"act"`
	Tenant       string   `json:"tenant"`
	Roles        []string `json:"roles"`
	Environments []string `json:"environments"`
	Resources    []string `json:"resources"`
	Scope        string   `json:"scope"`
	Exp          int64    `json:"exp"`
	GrantID      string   `json:"grant_id"`
	GrantExp     int64    `json:"grant_exp"`
	ClientID     string   `json:"client_id"`
	Ticket       string   `json:"ticket"`
}

func header(t *testing.T, jws string) map[string]any {
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(jws, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	json.Unmarshal(b, &h)
	return h
}

func TestFlowEndToEnd(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	admin := f.admin(t, "acme")

	// A tenant starts with support access off.
	r := f.api(t, "GET", "/api/v1/tenants/acme/support-access", admin, nil)
	if r.status != 200 || r.body["enabled"] != false {
		t.Fatalf("initial support access: %d %s", r.status, r.raw)
	}
	if r := f.api(t, "POST", "/api/v1/tenants/acme/grants", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}}); r.status != 409 {
		t.Fatalf("grant with support off: %d %s, want 409", r.status, r.raw)
	}
	f.enable(t, "acme", admin, false)
	grantID, code := f.grant(t, "acme", admin, map[string]any{
		"role": "admin", "environments": []string{"production"}, "resources": []string{"ws-42"}, "expires_in": 3600, "ticket": "ZD-7"})
	if len(code) != 6 {
		t.Fatalf("code %q is not 6 digits", code)
	}
	// the code appears in no other response
	if l := f.api(t, "GET", "/api/v1/tenants/acme/grants", admin, nil); strings.Contains(string(l.raw), code) {
		t.Fatal("grant list shows the code")
	}

	eng := f.engineer(t, "eng-alice")
	tr := f.exchange(t, "acme", code, eng)
	if tr.status != 200 {
		t.Fatalf("exchange: %d %s", tr.status, tr.raw)
	}
	if tr.str("issued_token_type") != "urn:ietf:params:oauth:token-type:access_token" || tr.str("token_type") != "Bearer" ||
		tr.str("refresh_token") == "" || tr.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("token response: %s", tr.raw)
	}
	at := tr.str("access_token")
	if h := header(t, at); h["typ"] != "at+jwt" || h["kid"] == "" || h["alg"] != "ES256" {
		t.Fatalf("JWS header = %v", h)
	}

	// The product verifies the JWT with go-oidc via discovery and JWKS.
	idt, err := productVerifier(t, f.base).Verify(ctx, at)
	if err != nil {
		t.Fatalf("product verification: %v", err)
	}
	var c accessClaims
	idt.Claims(&c)
	if c.Sub != "admin-of-acme" || c.Act.Sub != "eng-alice" || c.Act.Iss != f.sup.m.Issuer() || c.Act.Email != "eng-alice@support.example" ||
		c.Tenant != "acme" || strings.Join(c.Roles, ",") != "admin" || strings.Join(c.Environments, ",") != "production" ||
		strings.Join(c.Resources, ",") != "ws-42" || c.GrantID != grantID || c.Ticket != "ZD-7" || c.ClientID != "actas-cli" {
		t.Fatalf("claims = %+v", c)
	}
	if strings.Contains(c.Scope, "users:write") || c.Scope != "read write admin" {
		t.Fatalf("scope %q must be the role's scopes minus never-grant scopes", c.Scope)
	}
	if c.Exp > c.GrantExp {
		t.Fatal("token outlives its grant")
	}
	// Another audience's verifier refuses it.
	other, _ := oidc.NewProvider(ctx, f.base)
	if _, err := other.Verifier(&oidc.Config{ClientID: "other-product"}).Verify(ctx, at); err == nil {
		t.Fatal("a verifier for another audience accepted the token")
	}

	ir := f.introspect(t, at)
	if ir.body["active"] != true || ir.str("sub") != "admin-of-acme" || ir.body["act"].(map[string]any)["sub"] != "eng-alice" ||
		ir.str("grant_id") != grantID || ir.str("token_type") != "Bearer" {
		t.Fatalf("introspection: %s", ir.raw)
	}
	// Introspection by a client of another audience: inactive.
	if r := f.form(t, "/introspect", url.Values{"token": {at}}, "other", otherSecret); string(r.raw) != "{\"active\":false}\n" {
		t.Fatalf("other audience introspection: %s", r.raw)
	}

	// Refresh through x/oauth2, as a CLI would.
	conf := oauth2.Config{ClientID: "actas-cli", Endpoint: oauth2.Endpoint{TokenURL: f.base + "/token", AuthStyle: oauth2.AuthStyleInParams}}
	refreshed, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tr.str("refresh_token"), Expiry: time.Now().Add(-time.Hour)}).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if !f.active(t, refreshed.AccessToken) || refreshed.RefreshToken == tr.str("refresh_token") {
		t.Fatal("refreshed token not active or refresh token not rotated")
	}

	// Terminate: every token of the grant goes inactive at once.
	if r := f.api(t, "DELETE", "/api/v1/tenants/acme/grants/"+grantID, admin, nil); r.status != 204 {
		t.Fatalf("terminate: %d %s", r.status, r.raw)
	}
	if r := f.api(t, "DELETE", "/api/v1/tenants/acme/grants/"+grantID, admin, nil); r.status != 204 {
		t.Fatalf("terminate is idempotent: %d", r.status)
	}
	if f.active(t, at) || f.active(t, refreshed.AccessToken) {
		t.Fatal("token active after its grant was terminated")
	}
	if _, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshed.RefreshToken, Expiry: time.Now().Add(-time.Hour)}).Token(); err == nil {
		t.Fatal("refresh after termination succeeded")
	}
	l := f.api(t, "GET", "/api/v1/tenants/acme/grants?status=inactive", admin, nil)
	gs := l.body["grants"].([]any)
	if len(gs) != 1 || gs[0].(map[string]any)["status"] != "revoked" {
		t.Fatalf("inactive list: %s", l.raw)
	}

	// Every state change is audited with its actor.
	a := f.api(t, "GET", "/api/v1/tenants/acme/audit", admin, nil)
	var actions []string
	for _, e := range a.body["events"].([]any) {
		ev := e.(map[string]any)
		actions = append(actions, ev["actor_type"].(string)+":"+ev["action"].(string))
	}
	want := "tenant_admin:grant.revoke,client:token.introspect,support_engineer:token.refresh,client:token.introspect,support_engineer:token.issue,support_engineer:grant.redeem,tenant_admin:grant.create,tenant_admin:support_access.enable"
	if strings.Join(actions, ",") != want {
		t.Fatalf("audit trail:\n got %s\nwant %s", strings.Join(actions, ","), want)
	}
}

// Invariant 1: no token outlives its grant; no grant outlives the policy.
func TestInvariantExpiry(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	_, code := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}, "expires_in": 120})
	tr := f.exchange(t, "acme", code, f.engineer(t, "eng-1"))
	if tr.status != 200 {
		t.Fatalf("exchange: %s", tr.raw)
	}
	var c accessClaims
	b, _ := base64.RawURLEncoding.DecodeString(strings.Split(tr.str("access_token"), ".")[1])
	json.Unmarshal(b, &c)
	if c.Exp != c.GrantExp || tr.body["expires_in"].(float64) > 120 {
		t.Fatalf("exp %d, grant_exp %d, expires_in %v: the token must end with its 2-minute grant", c.Exp, c.GrantExp, tr.body["expires_in"])
	}
	for name, body := range map[string]map[string]any{
		"fail/beyond global max":     {"role": "monitor", "environments": []string{"sandbox"}, "expires_in": 181 * 24 * 3600},
		"fail/beyond production max": {"role": "monitor", "environments": []string{"production"}, "expires_in": 6 * 24 * 3600},
		"fail/mixed envs take lower": {"role": "monitor", "environments": []string{"sandbox", "production"}, "expires_at": time.Now().Add(10 * 24 * time.Hour).Format(time.RFC3339)},
		"fail/in the past":           {"role": "monitor", "environments": []string{"sandbox"}, "expires_at": "2001-01-01T00:00:00Z"},
	} {
		t.Run(name, func(t *testing.T) {
			if r := f.api(t, "POST", "/api/v1/tenants/acme/grants", admin, body); r.status != 422 || r.str("error") == "" {
				t.Fatalf("got %d %s, want 422", r.status, r.raw)
			}
		})
	}
	// default expiry is capped by the environment
	r := f.api(t, "POST", "/api/v1/tenants/acme/grants", admin, map[string]any{"role": "monitor", "environments": []string{"production"}})
	exp, _ := time.Parse(time.RFC3339, r.body["grant"].(map[string]any)["expires_at"].(string))
	if r.status != 201 || time.Until(exp) > 24*time.Hour+time.Minute {
		t.Fatalf("default expiry: %d %s", r.status, r.raw)
	}
}

// Invariant 2: no token above the granter's role or the policy ceiling,
// nothing the grant lacks, no never-grant scope.
func TestInvariantCeilings(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	manager := f.cust.token(t, &testUser{Sub: "mgr", OrgID: "acme", Role: "manage", Plan: "enterprise"})
	free := f.cust.token(t, &testUser{Sub: "cheap", OrgID: "acme", Role: "admin", Plan: "free"})
	nobody := f.cust.token(t, &testUser{Sub: "ghost", OrgID: "acme", Role: "superuser"})

	f.enable(t, "acme", admin, false)
	if r := f.api(t, "POST", "/api/v1/tenants/acme/grants", manager, map[string]any{"role": "monitor", "environments": []string{"sandbox"}}); r.status != 403 || r.str("rule") != "granter-roles" {
		t.Fatalf("non-admin grant without tenant setting: %d %s", r.status, r.raw)
	}
	f.enable(t, "acme", admin, true)
	for name, tc := range map[string]struct {
		bearer string
		body   map[string]any
		status int
	}{
		"fail/manager grants admin": {manager, map[string]any{"role": "admin", "environments": []string{"sandbox"}}, 403},
		"fail/unknown role":         {admin, map[string]any{"role": "root", "environments": []string{"sandbox"}}, 422},
		"fail/unknown environment":  {admin, map[string]any{"role": "monitor", "environments": []string{"staging"}}, 422},
		"fail/no environment":       {admin, map[string]any{"role": "monitor", "environments": []string{}}, 422},
		"fail/free plan rule":       {free, map[string]any{"role": "monitor", "environments": []string{"sandbox"}}, 403},
		"fail/role not in policy":   {nobody, map[string]any{"role": "monitor", "environments": []string{"sandbox"}}, 403},
		"fail/bad resource":         {admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}, "resources": []string{"a b"}}, 422},
		"ok/manager grants manage":  {manager, map[string]any{"role": "manage", "environments": []string{"sandbox"}}, 201},
		"ok/manager grants monitor": {manager, map[string]any{"role": "monitor", "environments": []string{"sandbox"}}, 201},
	} {
		t.Run(name, func(t *testing.T) {
			if r := f.api(t, "POST", "/api/v1/tenants/acme/grants", tc.bearer, tc.body); r.status != tc.status {
				t.Fatalf("got %d %s, want %d", r.status, r.raw, tc.status)
			}
		})
	}
	// A manager sees only their own grants; an admin sees all.
	if l := f.api(t, "GET", "/api/v1/tenants/acme/grants", manager, nil); len(l.body["grants"].([]any)) != 2 {
		t.Fatalf("manager's list: %s", l.raw)
	}

	// Tier cap: an L1 engineer redeeming an admin grant gets monitor.
	_, code := f.grant(t, "acme", admin, map[string]any{"role": "admin", "environments": []string{"sandbox"}})
	tr := f.exchange(t, "acme", code, f.engineer(t, "eng-l1", "support", "support-l1"))
	if tr.status != 200 {
		t.Fatalf("L1 exchange: %s", tr.raw)
	}
	ir := f.introspect(t, tr.str("access_token"))
	if roles := ir.body["roles"].([]any); len(roles) != 1 || roles[0] != "monitor" || ir.str("scope") != "read" {
		t.Fatalf("tier cap not applied: %s", ir.raw)
	}
	if envs := ir.body["environments"].([]any); len(envs) != 1 || envs[0] != "sandbox" {
		t.Fatalf("environments: %s", ir.raw)
	}
	// Engineers outside the required group are refused; the code survives.
	_, code = f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
	if r := f.exchange(t, "acme", code, f.engineer(t, "eng-x", "sales")); r.status != 400 || !strings.Contains(r.str("error_description"), "policy") {
		t.Fatalf("engineer outside support: %d %s", r.status, r.raw)
	}
	if r := f.exchange(t, "acme", code, f.engineer(t, "eng-ok")); r.status != 200 {
		t.Fatalf("the code must survive a policy refusal: %s", r.raw)
	}
	// Requested scope narrows; an ungranted scope is refused.
	_, code = f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"sandbox"}})
	form := exchangeForm("acme", code, f.engineer(t, "eng-s"))
	form.Set("scope", "admin")
	if r := f.form(t, "/token", form, "", ""); r.status != 400 || r.str("error") != "invalid_scope" {
		t.Fatalf("ungranted scope: %d %s", r.status, r.raw)
	}
	form.Set("scope", "read")
	if r := f.form(t, "/token", form, "", ""); r.status != 200 || r.str("scope") != "read" {
		t.Fatalf("narrowed scope: %d %s", r.status, r.raw)
	}
}

// Invariant 3: after revoke or toggle-off, introspection is inactive.
func TestInvariantRevocation(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	redeem := func() (string, string) {
		_, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"sandbox"}})
		tr := f.exchange(t, "acme", code, f.engineer(t, "eng-r"))
		if tr.status != 200 {
			t.Fatalf("exchange: %s", tr.raw)
		}
		return tr.str("access_token"), tr.str("refresh_token")
	}

	t.Run("RFC 7009 access token", func(t *testing.T) {
		at, _ := redeem()
		if r := f.form(t, "/revoke", url.Values{"token": {at}, "client_id": {"actas-cli"}}, "", ""); r.status != 200 {
			t.Fatalf("revoke: %d %s", r.status, r.raw)
		}
		if f.active(t, at) {
			t.Fatal("revoked token active")
		}
	})
	t.Run("RFC 7009 refresh token ends the grant", func(t *testing.T) {
		at, rt := redeem()
		if r := f.form(t, "/revoke", url.Values{"token": {rt}, "token_type_hint": {"refresh_token"}, "client_id": {"actas-cli"}}, "", ""); r.status != 200 {
			t.Fatalf("revoke: %d %s", r.status, r.raw)
		}
		if f.active(t, at) {
			t.Fatal("access token active after its refresh token was revoked")
		}
	})
	t.Run("RFC 7009 unknown token is 200", func(t *testing.T) {
		if r := f.form(t, "/revoke", url.Values{"token": {"not-a-token"}, "client_id": {"actas-cli"}}, "", ""); r.status != 200 {
			t.Fatalf("unknown token: %d", r.status)
		}
	})
	t.Run("other client may not revoke", func(t *testing.T) {
		at, _ := redeem()
		if r := f.form(t, "/revoke", url.Values{"token": {at}}, "other", otherSecret); r.status != 400 || r.str("error") != "unauthorized_client" {
			t.Fatalf("foreign revoke: %d %s", r.status, r.raw)
		}
		if !f.active(t, at) {
			t.Fatal("a foreign client revoked a token")
		}
	})
	t.Run("toggle off ends everything", func(t *testing.T) {
		at, _ := redeem()
		_, pending := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
		r := f.api(t, "PUT", "/api/v1/tenants/acme/support-access", admin, map[string]any{"enabled": false})
		if r.status != 200 || r.body["revoked_grants"].(float64) < 2 {
			t.Fatalf("toggle off: %s", r.raw)
		}
		if f.active(t, at) {
			t.Fatal("token active after toggle off")
		}
		f.enable(t, "acme", admin, false)
		if f.active(t, at) {
			t.Fatal("re-enabling revived a token")
		}
		if r := f.exchange(t, "acme", pending, f.engineer(t, "eng-r")); r.status != 400 {
			t.Fatalf("a code from before toggle-off redeemed: %s", r.raw)
		}
	})
	t.Run("customer of another tenant cannot terminate", func(t *testing.T) {
		id, _ := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
		evil := f.admin(t, "evil")
		if r := f.api(t, "DELETE", "/api/v1/tenants/acme/grants/"+id, evil, nil); r.status != 403 {
			t.Fatalf("cross-tenant delete: %d", r.status)
		}
		if r := f.api(t, "DELETE", "/api/v1/tenants/evil/grants/"+id, evil, nil); r.status != 404 {
			t.Fatalf("cross-tenant delete via own path: %d", r.status)
		}
	})
}

// Invariant 4: a code redeems once, for one engineer; guessing is bounded.
func TestInvariantSingleUseAndGuessing(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)

	t.Run("64 concurrent redemptions, one token", func(t *testing.T) {
		_, code := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
		toks := make([]string, 64)
		for i := range toks {
			toks[i] = f.engineer(t, "eng-c")
		}
		var wg sync.WaitGroup
		statuses := make([]int, 64)
		for i := range toks {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				statuses[i] = f.exchange(t, "acme", code, toks[i]).status
			}(i)
		}
		wg.Wait()
		ok := 0
		for _, s := range statuses {
			switch s {
			case 200:
				ok++
			case 400:
			default:
				t.Errorf("unexpected status %d", s)
			}
		}
		if ok != 1 {
			t.Fatalf("%d redemptions succeeded, want exactly 1", ok)
		}
	})

	t.Run("tenant failure limit voids pending codes", func(t *testing.T) {
		guess := f.admin(t, "guess")
		f.enable(t, "guess", guess, false)
		id, code := f.grant(t, "guess", guess, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
		wrong := "000000"
		if code == wrong {
			wrong = "000001"
		}
		for i := 0; i < 5; i++ { // max_failures: 5, spread over engineers
			r := f.exchange(t, "guess", wrong, f.engineer(t, "guesser-"+string(rune('a'+i))))
			if r.status != 400 || r.str("error_description") != "the support code is invalid, expired or already used" {
				t.Fatalf("guess %d: %d %s", i, r.status, r.raw)
			}
		}
		if r := f.exchange(t, "guess", code, f.engineer(t, "eng-late")); r.status != 400 {
			t.Fatalf("a code survived the tenant lockout: %s", r.raw)
		}
		g := f.api(t, "GET", "/api/v1/tenants/guess/grants?status=all", guess, nil)
		for _, e := range g.body["grants"].([]any) {
			if gm := e.(map[string]any); gm["id"] == id && (gm["status"] != "revoked" || gm["revoke_reason"] != "lockout") {
				t.Fatalf("voided grant: %v", gm)
			}
		}
		a := f.api(t, "GET", "/api/v1/tenants/guess/audit?action=tenant.lockout", guess, nil)
		if len(a.body["events"].([]any)) != 1 {
			t.Fatalf("lockout audit: %s", a.raw)
		}
	})

	t.Run("engineer failure limit answers slow_down", func(t *testing.T) {
		eng := f.engineer(t, "eng-brute")
		for i := 0; i < 5; i++ {
			f.exchange(t, "nonexistent-tenant", "123456", eng)
		}
		_, code := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
		r := f.exchange(t, "acme", code, eng)
		if r.status != 400 || r.str("error") != "slow_down" {
			t.Fatalf("locked engineer: %d %s", r.status, r.raw)
		}
		if r := f.exchange(t, "acme", code, f.engineer(t, "eng-good")); r.status != 200 {
			t.Fatalf("a locked engineer's attempt consumed the code: %s", r.raw)
		}
	})
}
