package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// providerFixture is actas with a product registered for OIDC sign-in
// and back-channel logout, and that product running.
type providerFixture struct {
	*fixture
	rp *product
}

func newProviderFixture(t *testing.T, edit ...func(cfgPath string)) *providerFixture {
	t.Helper()
	rp := startWebProduct(t)
	cust, sup := startIDP(t), startIDP(t)
	dir := t.TempDir()
	listen := freePort(t)
	cfg := writeConfig(t, dir, listen, "sqlite://"+filepath.Join(dir, "actas.db"), cust, sup, testPolicy)
	for _, e := range edit {
		e(cfg)
	}
	if err := appendFile(cfg, rp.clientConfig()+loopbackPushes); err != nil {
		t.Fatal(err)
	}
	f := &fixture{server: startServer(t, cfg, listen, "ACTAS_WEB_SECRET="+productWebSecret), cust: cust, sup: sup}
	rp.discover(f.base)
	return &providerFixture{fixture: f, rp: rp}
}

// queueEngineer makes the support IdP sign the next browser in as sub.
func (f *providerFixture) queueEngineer(sub string, groups ...string) {
	f.sup.mu.Lock()
	defer f.sup.mu.Unlock()
	f.sup.m.QueueUser(&testUser{Sub: sub, Email: sub + "@support.example", Groups: groups, AMR: []string{"pwd", "mfa"}})
}

// TestProviderFlow is flow 6 in a real browser: a product built on go-oidc
// and x/oauth2 signs a support engineer in as the customer through actas,
// and hears by back-channel logout when the grant ends.
func TestProviderFlow(t *testing.T) {
	f := newProviderFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	_, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"production"}, "expires_in": 7200})

	b := newBrowser(t, true)
	axe := newAxe(t)
	f.queueEngineer("alice", "support")
	b.run(t, "start sign-in at the product", chromedp.Navigate(f.rp.url("/login")))
	b.waitText(t, "Whom will you act as?")
	b.waitText(t, "You hold no live grant")
	axe.check(t, b, "provider: choose")
	b.shot(t, "provider-choose")

	t.Run("fail/a wrong code is a counted failed redemption", func(t *testing.T) {
		wrong := "000000"
		if code == wrong {
			wrong = "000001"
		}
		b.run(t, "enter a wrong code", fill("Customer tenant", "acme"), fill("Support code", wrong), click("Redeem code"))
		b.waitText(t, "the support code is invalid, expired or already used")
		r := f.api(t, "GET", "/api/v1/tenants/acme/audit?action=grant.redeem", admin, nil)
		evs, _ := r.body["events"].([]any)
		failed := 0
		for _, e := range evs {
			if e.(map[string]any)["outcome"] == "failure" {
				failed++
			}
		}
		if failed != 1 {
			t.Fatalf("want one failed redemption in the audit, got %d: %s", failed, r.raw)
		}
	})

	var first rpResult
	t.Run("ok/redeem, confirm, signed in as the customer", func(t *testing.T) {
		b.run(t, "enter the code", fill("Customer tenant", "acme"), fill("Support code", code), click("Redeem code"))
		b.waitText(t, "Act as admin@acme.example?")
		axe.check(t, b, "provider: confirm")
		b.shot(t, "provider-confirm")
		page := b.text(t)
		for _, want := range []string{"manage", "production", "recorded in their audit log", "Access ends"} {
			if !strings.Contains(page, want) {
				t.Errorf("the confirmation does not say %q:\n%s", want, page)
			}
		}
		b.run(t, "confirm", click("Sign in as admin@acme.example"))
		b.waitText(t, "Signed in as admin-of-acme, acted for by alice.")
		first = f.rp.last()
		c := first.Claims
		act, _ := c["act"].(map[string]any)
		switch {
		case c["sub"] != "admin-of-acme" || act["sub"] != "alice" || c["tenant"] != "acme":
			t.Errorf("ID token names the wrong people: %s", claimsJSON(c))
		case fmt.Sprint(c["roles"]) != "[manage]" || fmt.Sprint(c["environments"]) != "[production]":
			t.Errorf("ID token carries the wrong access: %s", claimsJSON(c))
		case c["sid"] == nil || c["auth_time"] == nil || c["grant_id"] == nil || fmt.Sprint(c["amr"]) != "[pwd mfa]":
			t.Errorf("ID token lacks sid, auth_time, grant_id or amr: %s", claimsJSON(c))
		case c["exp"].(float64) > c["grant_exp"].(float64):
			t.Errorf("ID token outlives its grant: %s", claimsJSON(c))
		}
		if !f.active(t, first.Token.AccessToken) {
			t.Fatal("the access token from the code is not active")
		}
	})

	t.Run("ok/second sign-in offers the live grant", func(t *testing.T) {
		b.run(t, "sign in again", chromedp.Navigate(f.rp.url("/login")))
		b.waitText(t, "Your live grants")
		axe.check(t, b, "provider: live grants")
		b.shot(t, "provider-live-grants")
		b.run(t, "pick the grant", click("Continue"))
		b.waitText(t, "Act as admin@acme.example?")
		b.run(t, "confirm", click("Sign in as admin@acme.example"))
		b.waitText(t, "Signed in as admin-of-acme")
		if f.rp.last().Claims["sid"] != first.Claims["sid"] {
			t.Error("the second sign-in did not reuse the engineer's session")
		}
	})

	t.Run("ok/terminate reaches the product by back-channel logout within a second", func(t *testing.T) {
		grantID := first.Claims["grant_id"].(string)
		start := time.Now()
		r := f.api(t, "DELETE", "/api/v1/tenants/acme/grants/"+grantID, admin, nil)
		if r.status != 200 && r.status != 204 {
			t.Fatalf("terminate: %d %s", r.status, r.raw)
		}
		l := f.rp.nextLogout(t, time.Second)
		t.Logf("logout token verified by the product %s after terminate answered", l.At.Sub(start))
		if l.Claims["sub"] != "admin-of-acme" || l.Claims["sid"] != first.Claims["sid"] || l.Claims["aud"] != "web" {
			t.Errorf("logout token names the wrong session: %s", claimsJSON(l.Claims))
		}
		refresh := f.form(t, "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {first.Token.RefreshToken}}, "web", productWebSecret)
		if refresh.status != 400 || refresh.str("error") != "invalid_grant" {
			t.Errorf("refresh after terminate: want 400 invalid_grant, got %d %s", refresh.status, refresh.raw)
		}
		req := mustGet(f.base + "/userinfo")
		req.Header.Set("Authorization", "Bearer "+first.Token.AccessToken)
		if ui := do(t, req); ui.status != 401 {
			t.Errorf("userinfo after terminate: want 401, got %d %s", ui.status, ui.raw)
		}
	})

	t.Run("fail/a reused code revokes what it issued", func(t *testing.T) {
		_, code2 := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}, "expires_in": 3600})
		b.run(t, "sign in for the new grant", chromedp.Navigate(f.rp.url("/login")))
		b.waitText(t, "Whom will you act as?")
		b.run(t, "redeem", fill("Customer tenant", "acme"), fill("Support code", code2), click("Redeem code"))
		b.run(t, "confirm", click("Sign in as admin@acme.example"))
		b.waitText(t, "Signed in as admin-of-acme")
		got := f.rp.last()
		drainLogouts(f.rp)
		replay := f.form(t, "/token", url.Values{"grant_type": {"authorization_code"}, "code": {f.rp.code()},
			"redirect_uri": {f.rp.url("/callback")}, "code_verifier": {strings.Repeat("a", 43)}}, "web", productWebSecret)
		if replay.status != 400 || replay.str("error") != "invalid_grant" {
			t.Fatalf("replayed code: want invalid_grant, got %d %s", replay.status, replay.raw)
		}
		if f.active(t, got.Token.AccessToken) {
			t.Fatal("the token issued from a replayed code is still active")
		}
		if l := f.rp.nextLogout(t, 2*time.Second); l.Claims["sid"] != got.Claims["sid"] {
			t.Errorf("logout after code reuse names another session: %s", claimsJSON(l.Claims))
		}
	})

	t.Run("fail/a wrong verifier is refused and burns the code", func(t *testing.T) {
		grant3, code3 := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}, "expires_in": 3600})
		b.run(t, "sign in, keeping the code", chromedp.Navigate(f.rp.url("/login?manual=1")))
		b.waitText(t, "Whom will you act as?")
		b.run(t, "redeem", fill("Customer tenant", "acme"), fill("Support code", code3), click("Redeem code"))
		b.run(t, "confirm", click("Sign in as admin@acme.example"))
		b.waitText(t, "code received")
		form := url.Values{"grant_type": {"authorization_code"}, "code": {f.rp.code()}, "redirect_uri": {f.rp.url("/callback")},
			"code_verifier": {strings.Repeat("b", 43)}}
		if r := f.form(t, "/token", form, "web", productWebSecret); r.status != 400 || r.str("error") != "invalid_grant" {
			t.Fatalf("wrong verifier: want invalid_grant, got %d %s", r.status, r.raw)
		}
		form.Set("code_verifier", f.rp.lastVerifier)
		if r := f.form(t, "/token", form, "web", productWebSecret); r.status != 400 || r.str("error") != "invalid_grant" {
			t.Fatalf("the right verifier after a wrong one: want invalid_grant (burnt), got %d %s", r.status, r.raw)
		}
		// A burnt code issued nothing, so its replay ends nothing.
		if g := f.api(t, "GET", "/api/v1/tenants/acme/grants/"+grant3, admin, nil); g.body["grant"].(map[string]any)["status"] != "active" {
			t.Fatalf("the grant of a burnt code: %s", g.raw)
		}
	})

	t.Run("ok/RP-initiated logout honours only registered URIs", func(t *testing.T) {
		drainLogouts(f.rp)
		hint := f.rp.last().IDToken
		bad := f.base + "/logout?" + url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {"https://evil.example/"}}.Encode()
		b.run(t, "logout to an unregistered URI", chromedp.Navigate(bad))
		b.waitText(t, "has not registered for after logout")
		axe.check(t, b, "provider: error")
		if u := b.url(t); !strings.HasPrefix(u, f.base) {
			t.Fatalf("the browser left actas for %s", u)
		}
		good := f.base + "/logout?" + url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {f.rp.url("/bye")}, "state": {"s-42"}}.Encode()
		b.run(t, "logout", chromedp.Navigate(good))
		b.waitText(t, "Signed out of the product. state=s-42")
		if l := f.rp.nextLogout(t, 2*time.Second); l.Claims["sid"] != f.rp.last().Claims["sid"] {
			t.Errorf("session logout token names another session: %s", claimsJSON(l.Claims))
		}
		// The session is over: the next sign-in goes to the support IdP.
		f.queueEngineer("alice", "support")
		b.run(t, "sign in after logout", chromedp.Navigate(f.rp.url("/login")))
		b.waitText(t, "Whom will you act as?")
	})
}

func drainLogouts(p *product) {
	for {
		select {
		case <-p.logouts:
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}

// TestProviderRefusals are the authorization requests actas refuses.
func TestProviderRefusals(t *testing.T) {
	f := newProviderFixture(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	challenge := "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" // RFC 7636 Appendix B
	authz := func(mod func(url.Values)) *http.Response {
		v := url.Values{"response_type": {"code"}, "client_id": {"web"}, "redirect_uri": {f.rp.url("/callback")}, "scope": {"openid"},
			"state": {"st"}, "nonce": {"n"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}
		mod(v)
		resp, err := noRedirect.Get(f.base + "/authorize?" + v.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, tc := range []struct {
		name  string
		mod   func(url.Values)
		error string // "" : no redirect at all
	}{
		{"unregistered redirect_uri", func(v url.Values) { v.Set("redirect_uri", "https://evil.example/cb") }, ""},
		{"redirect_uri with an extra path", func(v url.Values) { v.Set("redirect_uri", f.rp.url("/callback/x")) }, ""},
		{"unknown client", func(v url.Values) { v.Set("client_id", "nobody") }, ""},
		{"missing PKCE", func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") }, "invalid_request"},
		{"plain PKCE", func(v url.Values) { v.Set("code_challenge_method", "plain") }, "invalid_request"},
		{"no openid scope", func(v url.Values) { v.Set("scope", "read") }, "invalid_scope"},
		{"implicit flow", func(v url.Values) { v.Set("response_type", "token") }, "unsupported_response_type"},
		{"prompt none", func(v url.Values) { v.Set("prompt", "none") }, "login_required"},
	} {
		t.Run("fail/"+tc.name, func(t *testing.T) {
			resp := authz(tc.mod)
			loc := resp.Header.Get("Location")
			if tc.error == "" {
				if resp.StatusCode != 400 || loc != "" {
					t.Fatalf("want 400 with no redirect, got %d to %q", resp.StatusCode, loc)
				}
				return
			}
			u, err := url.Parse(loc)
			if err != nil || resp.StatusCode != 302 || !strings.HasPrefix(loc, f.rp.url("/callback")) {
				t.Fatalf("want a redirect to the client, got %d to %q", resp.StatusCode, loc)
			}
			if q := u.Query(); q.Get("error") != tc.error || q.Get("state") != "st" || q.Get("iss") != f.base {
				t.Fatalf("want error=%s with state and iss, got %s", tc.error, u.RawQuery)
			}
		})
	}

	t.Run("fail/engineer outside the group is refused before any code entry", func(t *testing.T) {
		b := newBrowser(t, true)
		f.queueEngineer("mallory", "sales")
		b.run(t, "sign in", chromedp.Navigate(f.rp.url("/login")))
		b.waitText(t, "You may not act as a customer")
		newAxe(t).check(t, b, "provider: refused")
		b.shot(t, "provider-refused")
		if page := b.text(t); strings.Contains(page, "Support code") {
			t.Fatalf("a refused engineer was offered the code form:\n%s", page)
		}
		b.run(t, "go back to the product", chromedp.Click(chromedp.Search(`//a[starts-with(normalize-space(), "Return to")]`)))
		b.waitText(t, "actas answered access_denied")
	})

	t.Run("fail/a code page from another browser is refused", func(t *testing.T) {
		b1 := newBrowser(t, true)
		f.queueEngineer("alice", "support")
		b1.run(t, "sign in", chromedp.Navigate(f.rp.url("/login")))
		b1.waitText(t, "Whom will you act as?")
		stolen := b1.url(t)
		b2 := newBrowser(t, true)
		b2.run(t, "open the stolen page", chromedp.Navigate(stolen))
		b2.waitText(t, "started in another browser")
	})

	t.Run("fail/a cross-origin POST is refused", func(t *testing.T) {
		crossOriginPOST(t, f.base+"/authorize/confirm", "req=x&grant=y&decision=allow", "")
	})
}

// crossOriginPOST posts a form as a page of another site would, with
// cookies, and expects 403.
func crossOriginPOST(t *testing.T, u, form, cookies string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if cookies != "" {
		req.Header.Set("Cookie", cookies)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin POST to %s: want 403, got %d", u, resp.StatusCode)
	}
}

// TestProviderLogoutOnPolicy: a policy edit that refuses a live token signs
// the product's session out too (the token-level end of a grant).
func TestProviderLogoutOnPolicy(t *testing.T) {
	f := newProviderFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	_, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"production"}})
	b := newBrowser(t, true)
	f.queueEngineer("alice", "support")
	b.run(t, "sign in", chromedp.Navigate(f.rp.url("/login")))
	b.run(t, "redeem", fill("Customer tenant", "acme"), fill("Support code", code), click("Redeem code"))
	b.run(t, "confirm", click("Sign in as admin@acme.example"))
	b.waitText(t, "Signed in as admin-of-acme")
	sid := f.rp.last().Claims["sid"]
	sha0 := f.readyz(t)["policy_sha256"].(string)
	if err := os.WriteFile(filepath.Join(f.dir, "policy.yaml"), []byte(withNoManageInProduction()), 0o600); err != nil {
		t.Fatal(err)
	}
	f.waitPolicy(t, sha0)
	if l := f.rp.nextLogout(t, 5*time.Second); l.Claims["sid"] != sid || l.Claims["sub"] != "admin-of-acme" {
		t.Fatalf("logout token after the policy edit: %s", claimsJSON(l.Claims))
	}
}
