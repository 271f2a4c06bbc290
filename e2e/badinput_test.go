package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// forge signs claims with a fresh key the verifier has never seen.
func forgeRS256(t *testing.T, claims jwt.MapClaims, kid string) string {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func forgeES256(t *testing.T, claims jwt.MapClaims, kid, typ string) string {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = kid
	tok.Header["typ"] = typ
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// algNone builds an unsigned token with the given header fields.
func algNone(claims map[string]any, hdr map[string]any) string {
	h := map[string]any{"alg": "none"}
	for k, v := range hdr {
		h[k] = v
	}
	hb, _ := json.Marshal(h)
	cb, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb) + "."
}

// tamper re-signs nothing: it swaps the payload of a real token.
func tamper(tok string, claims map[string]any) string {
	p := strings.Split(tok, ".")
	cb, _ := json.Marshal(claims)
	return p[0] + "." + base64.RawURLEncoding.EncodeToString(cb) + "." + p[2]
}

func TestBadInput(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	_, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"sandbox"}})
	eng := f.engineer(t, "eng-1")
	live := f.exchange(t, "acme", code, eng)
	if live.status != 200 {
		t.Fatalf("setup exchange: %s", live.raw)
	}
	at := live.str("access_token")
	_, code2 := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"sandbox"}})
	kid := header(t, at)["kid"].(string)

	now := time.Now()
	actasClaims := map[string]any{"iss": f.base, "sub": "admin-of-acme", "aud": []string{"product"}, "client_id": "actas-cli",
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nbf": now.Unix(), "jti": "forged-jti", "tenant": "acme",
		"act": map[string]any{"sub": "mallory", "iss": "x"}, "roles": []string{"admin"}, "environments": []string{"production"}}
	supportClaims := jwt.MapClaims{"iss": f.sup.m.Issuer(), "sub": "mallory", "aud": "actas", "exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(), "groups": []string{"support"}}
	customerClaims := jwt.MapClaims{"iss": f.cust.m.Issuer(), "sub": "mallory", "aud": "actas", "exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(), "org_id": "acme", "role": "admin"}
	expiredEngineer := f.sup.token(t, &testUser{Sub: "eng-old", Groups: []string{"support"}, Expire: true})
	expiredAdmin := f.cust.token(t, &testUser{Sub: "admin-old", OrgID: "acme", Role: "admin", Expire: true})
	sqli := "acme' OR '1'='1"

	before := snapshot(t, f, admin)

	exch := func(mod func(url.Values)) url.Values {
		v := exchangeForm("acme", code2, eng)
		mod(v)
		return v
	}
	big := strings.Repeat("a", 70<<10)

	// OAuth endpoints: RFC 6749 JSON errors.
	type oauthCase struct {
		name       string
		path       string
		method     string
		ctype      string
		body       string
		basic      [2]string
		status     int
		error      string
		inactiveOK bool // for /introspect: 200 {"active":false}
	}
	form := func(v url.Values) string { return v.Encode() }
	cases := []oauthCase{
		{name: "token/GET", path: "/token", method: "GET", status: 405, error: "invalid_request"},
		{name: "token/json body", path: "/token", ctype: "application/json", body: `{"grant_type":"x"}`, status: 400, error: "invalid_request"},
		{name: "token/no grant_type", path: "/token", body: "client_id=actas-cli", status: 400, error: "invalid_request"},
		{name: "token/unknown grant_type", path: "/token", body: "client_id=actas-cli&grant_type=password", status: 400, error: "unsupported_grant_type"},
		{name: "token/duplicate tenant", path: "/token", body: form(exch(func(v url.Values) { v.Add("tenant", "evil") })), status: 400, error: "invalid_request"},
		{name: "token/over 64 KiB", path: "/token", body: "client_id=actas-cli&x=" + big, status: 413, error: "invalid_request"},
		{name: "token/bad encoding", path: "/token", body: "client_id=%zz", status: 400, error: "invalid_request"},
		{name: "token/no subject_token", path: "/token", body: form(exch(func(v url.Values) { v.Del("subject_token") })), status: 400, error: "invalid_request"},
		{name: "token/wrong subject_token_type", path: "/token", body: form(exch(func(v url.Values) { v.Set("subject_token_type", "urn:ietf:params:oauth:token-type:jwt") })), status: 400, error: "invalid_request"},
		{name: "token/wrong actor_token_type", path: "/token", body: form(exch(func(v url.Values) { v.Set("actor_token_type", "urn:ietf:params:oauth:token-type:jwt") })), status: 400, error: "invalid_request"},
		{name: "token/unknown client", path: "/token", body: form(exch(func(v url.Values) { v.Set("client_id", "nobody") })), status: 401, error: "invalid_client"},
		{name: "token/no client", path: "/token", body: form(exch(func(v url.Values) { v.Del("client_id") })), status: 401, error: "invalid_client"},
		{name: "token/wrong secret", path: "/token", body: form(exch(func(v url.Values) { v.Del("client_id") })), basic: [2]string{"product", "wrong-secret-123456"}, status: 401, error: "invalid_client"},
		{name: "token/basic and post", path: "/token", body: form(exch(func(v url.Values) { v.Del("client_id"); v.Set("client_secret", productSecret) })), basic: [2]string{"product", productSecret}, status: 400, error: "invalid_request"},
		{name: "token/public client with secret", path: "/token", body: form(exch(func(v url.Values) { v.Set("client_secret", "guess-guess-guess") })), status: 401, error: "invalid_client"},
		{name: "token/unknown audience", path: "/token", body: form(exch(func(v url.Values) { v.Set("audience", "elsewhere") })), status: 400, error: "invalid_target"},
		{name: "token/sql in tenant", path: "/token", body: form(exch(func(v url.Values) { v.Set("tenant", sqli) })), status: 400, error: "invalid_request"},
		{name: "token/sql in code", path: "/token", body: form(exch(func(v url.Values) { v.Set("subject_token", "1' OR 1=1--") })), status: 400, error: "invalid_request"},
		{name: "token/sql in client_id", path: "/token", body: form(exch(func(v url.Values) { v.Set("client_id", "x' OR '1'='1") })), status: 401, error: "invalid_client"},
		{name: "token/sql in audience", path: "/token", body: form(exch(func(v url.Values) { v.Set("audience", "product' --") })), status: 400, error: "invalid_target"},
		{name: "token/sql in actor_token", path: "/token", body: form(exch(func(v url.Values) { v.Set("actor_token", "'; DROP TABLE grants; --") })), status: 400, error: "invalid_request"},
		{name: "token/forged actor token", path: "/token", body: form(exch(func(v url.Values) { v.Set("actor_token", forgeRS256(t, supportClaims, "")) })), status: 400, error: "invalid_request"},
		{name: "token/alg none actor token", path: "/token", body: form(exch(func(v url.Values) { v.Set("actor_token", algNone(supportClaims, nil)) })), status: 400, error: "invalid_request"},
		{name: "token/expired actor token", path: "/token", body: form(exch(func(v url.Values) { v.Set("actor_token", expiredEngineer) })), status: 400, error: "invalid_request"},
		{name: "token/customer token as actor", path: "/token", body: form(exch(func(v url.Values) { v.Set("actor_token", admin) })), status: 400, error: "invalid_request"},
		{name: "token/tampered actor token", path: "/token", body: form(exch(func(v url.Values) { v.Set("actor_token", tamper(eng, map[string]any(supportClaims))) })), status: 400, error: "invalid_request"},
		{name: "token/bad refresh token", path: "/token", body: "grant_type=refresh_token&client_id=actas-cli&refresh_token=actas_rt_nope", status: 400, error: "invalid_grant"},
		{name: "token/refresh by other client", path: "/token", body: "grant_type=refresh_token&refresh_token=" + url.QueryEscape(live.str("refresh_token")), basic: [2]string{"other", otherSecret}, status: 400, error: "invalid_grant"},

		{name: "introspect/no client auth", path: "/introspect", body: "token=" + at, status: 401, error: "invalid_client"},
		{name: "introspect/public client", path: "/introspect", body: "token=" + at + "&client_id=actas-cli", status: 401, error: "invalid_client"},
		{name: "introspect/no token", path: "/introspect", body: "", basic: [2]string{"product", productSecret}, status: 400, error: "invalid_request"},
		{name: "introspect/duplicate token", path: "/introspect", body: "token=a&token=b", basic: [2]string{"product", productSecret}, status: 400, error: "invalid_request"},
		{name: "introspect/over 64 KiB", path: "/introspect", body: "token=" + big, basic: [2]string{"product", productSecret}, status: 413, error: "invalid_request"},
		{name: "introspect/garbage", path: "/introspect", body: "token=garbage", basic: [2]string{"product", productSecret}, inactiveOK: true},
		{name: "introspect/sql", path: "/introspect", body: "token=" + url.QueryEscape("x' OR '1'='1"), basic: [2]string{"product", productSecret}, inactiveOK: true},
		{name: "introspect/alg none", path: "/introspect", body: "token=" + algNone(actasClaims, map[string]any{"typ": "at+jwt", "kid": kid}), basic: [2]string{"product", productSecret}, inactiveOK: true},
		{name: "introspect/forged same kid", path: "/introspect", body: "token=" + forgeES256(t, actasClaims, kid, "at+jwt"), basic: [2]string{"product", productSecret}, inactiveOK: true},
		{name: "introspect/tampered payload", path: "/introspect", body: "token=" + tamper(at, actasClaims), basic: [2]string{"product", productSecret}, inactiveOK: true},
		{name: "introspect/upstream id token", path: "/introspect", body: "token=" + eng, basic: [2]string{"product", productSecret}, inactiveOK: true},
		{name: "introspect/other audience", path: "/introspect", body: "token=" + at, basic: [2]string{"other", otherSecret}, inactiveOK: true},

		{name: "revoke/no client", path: "/revoke", body: "token=" + at, status: 401, error: "invalid_client"},
		{name: "revoke/no token", path: "/revoke", body: "client_id=actas-cli", status: 400, error: "invalid_request"},
		{name: "revoke/unknown hint ignored (RFC 7009 §2.1)", path: "/revoke", body: "client_id=actas-cli&token=x&token_type_hint=id_token", status: 200},
		{name: "revoke/forged token", path: "/revoke", body: "client_id=actas-cli&token=" + forgeES256(t, map[string]any{"jti": live.str("jti")}, kid, "at+jwt"), status: 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "POST"
			}
			req, _ := http.NewRequest(method, f.base+tc.path, strings.NewReader(tc.body))
			ct := tc.ctype
			if ct == "" {
				ct = "application/x-www-form-urlencoded"
			}
			req.Header.Set("Content-Type", ct)
			if tc.basic[0] != "" {
				req.SetBasicAuth(tc.basic[0], tc.basic[1])
			}
			r := do(t, req)
			if r.status >= 500 {
				t.Fatalf("5xx: %d %s", r.status, r.raw)
			}
			if tc.inactiveOK {
				if r.status != 200 || string(r.raw) != "{\"active\":false}\n" {
					t.Fatalf("got %d %s, want exactly {\"active\":false}", r.status, r.raw)
				}
				return
			}
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.raw)
			}
			if tc.status == 200 {
				return
			}
			if r.str("error") != tc.error || r.str("error_description") == "" || r.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("error body %s, want error %q with a description and no-store", r.raw, tc.error)
			}
			if strings.Contains(string(r.raw), "sql") || strings.Contains(string(r.raw), "goroutine") {
				t.Fatalf("internal detail leaked: %s", r.raw)
			}
		})
	}

	// Customer API: {"error", "message"} with the right status.
	type apiCase struct {
		name, method, path, bearer, ctype, body string
		status                                  int
	}
	grantBody := `{"role":"monitor","environments":["sandbox"]}`
	apiCases := []apiCase{
		{"no bearer", "GET", "/api/v1/tenants/acme/grants", "", "", "", 401},
		{"garbage bearer", "GET", "/api/v1/tenants/acme/grants", "garbage", "", "", 401},
		{"alg none bearer", "GET", "/api/v1/tenants/acme/grants", algNone(map[string]any(customerClaims), nil), "", "", 401},
		{"forged bearer", "GET", "/api/v1/tenants/acme/grants", forgeRS256(t, customerClaims, ""), "", "", 401},
		{"expired bearer", "GET", "/api/v1/tenants/acme/grants", expiredAdmin, "", "", 401},
		{"support idp bearer", "GET", "/api/v1/tenants/acme/grants", eng, "", "", 401},
		{"actas access token as bearer", "GET", "/api/v1/tenants/acme/grants", at, "", "", 401},
		{"other tenant path", "GET", "/api/v1/tenants/other/grants", admin, "", "", 403},
		{"sql in tenant path", "GET", "/api/v1/tenants/" + url.PathEscape(sqli) + "/grants", admin, "", "", 403},
		{"sql in grant id", "DELETE", "/api/v1/tenants/acme/grants/" + url.PathEscape("x' OR '1'='1"), admin, "", "", 404},
		{"sql in status", "GET", "/api/v1/tenants/acme/grants?status=" + url.QueryEscape("all' --"), admin, "", "", 400},
		{"sql in audit action", "GET", "/api/v1/tenants/acme/audit?action=" + url.QueryEscape("x' OR 1=1"), admin, "", "", 400},
		{"sql in audit actor_type", "GET", "/api/v1/tenants/acme/audit?actor_type=" + url.QueryEscape("system' --"), admin, "", "", 400},
		{"edited cursor", "GET", "/api/v1/tenants/acme/audit?cursor=AAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAA", admin, "", "", 400},
		{"garbage cursor", "GET", "/api/v1/tenants/acme/audit?cursor=" + url.QueryEscape("' OR 1=1"), admin, "", "", 400},
		{"bad since", "GET", "/api/v1/tenants/acme/audit?since=yesterday", admin, "", "", 400},
		{"unknown query", "GET", "/api/v1/tenants/acme/grants?evil=1", admin, "", "", 400},
		{"duplicate query", "GET", "/api/v1/tenants/acme/grants?status=all&status=active", admin, "", "", 400},
		{"bad json", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `{"role":`, 400},
		{"not json", "POST", "/api/v1/tenants/acme/grants", admin, "text/plain", grantBody, 400},
		{"array body", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `[1,2]`, 400},
		{"unknown field", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `{"role":"monitor","environments":["sandbox"],"admin":true}`, 400},
		{"duplicate field", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `{"role":"monitor","role":"admin","environments":["sandbox"]}`, 400},
		{"wrong type", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `{"role":"monitor","environments":"sandbox"}`, 400},
		{"trailing data", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", grantBody + `{}`, 400},
		{"both expiries", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `{"role":"monitor","environments":["sandbox"],"expires_in":60,"expires_at":"2030-01-01T00:00:00Z"}`, 400},
		{"huge expires_in", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `{"role":"monitor","environments":["sandbox"],"expires_in":9223372036854775807}`, 422},
		{"overflowing expires_in", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `{"role":"monitor","environments":["sandbox"],"expires_in":1e400}`, 400},
		{"sql in role", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `{"role":"admin' --","environments":["sandbox"]}`, 422},
		{"sql in environment", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `{"role":"monitor","environments":["sandbox'); DROP TABLE grants;--"]}`, 422},
		{"sql in resource", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `{"role":"monitor","environments":["sandbox"],"resources":["' OR 1=1"]}`, 422},
		{"over 64 KiB", "POST", "/api/v1/tenants/acme/grants", admin, "application/json", `{"role":"` + big + `"}`, 413},
		{"toggle: enabled missing", "PUT", "/api/v1/tenants/acme/support-access", admin, "application/json", `{}`, 400},
		{"toggle: enabled string", "PUT", "/api/v1/tenants/acme/support-access", admin, "application/json", `{"enabled":"false"}`, 400},
		{"unknown endpoint", "GET", "/api/v1/nothing", admin, "", "", 404},
		{"wrong method", "PATCH", "/api/v1/tenants/acme/grants", admin, "", "", 405},
		{"ticket hook not configured", "POST", "/hooks/tickets", "", "application/json", `{}`, 404},
	}
	for _, tc := range apiCases {
		t.Run("api/"+tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, f.base+tc.path, strings.NewReader(tc.body))
			if tc.bearer != "" {
				req.Header.Set("Authorization", "Bearer "+tc.bearer)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			r := do(t, req)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.raw)
			}
			if r.str("error") == "" || r.str("message") == "" {
				t.Fatalf("body %s is not {\"error\",\"message\"}", r.raw)
			}
		})
	}

	if after := snapshot(t, f, admin); after != before {
		t.Fatalf("bad input changed state:\nbefore %s\nafter  %s", before, after)
	}
	if !f.active(t, at) {
		t.Fatal("bad input revoked a live token")
	}
	if r := f.exchange(t, "acme", code2, eng); r.status != 200 {
		t.Fatalf("bad input consumed or voided a live code: %s", r.raw)
	}
}

// snapshot is the observable state: grants and audit events.
func snapshot(t *testing.T, f *fixture, admin string) string {
	g := f.api(t, "GET", "/api/v1/tenants/acme/grants?status=all", admin, nil)
	a := f.api(t, "GET", "/api/v1/tenants/acme/audit?limit=500", admin, nil)
	s := f.api(t, "GET", "/api/v1/tenants/acme/support-access", admin, nil)
	return string(g.raw) + string(a.raw) + string(s.raw)
}
