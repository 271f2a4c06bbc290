package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/actas/actas/rp/dpop"
)

// cliEnv runs `actas support` as an engineer's shell would: its own
// config directory, the broker in ACTAS_BROKER.
type cliEnv struct {
	f   *fixture
	env []string
	dir string
}

func newCLIEnv(t *testing.T, f *fixture) *cliEnv {
	dir := t.TempDir()
	return &cliEnv{f: f, dir: dir, env: append(childEnv(), "XDG_CONFIG_HOME="+dir, "ACTAS_BROKER="+f.base, "BROWSER=")}
}

// run runs actas support args and returns stdout, stderr and the status.
func (c *cliEnv) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(actasBin, append([]string{"support"}, args...)...)
	cmd.Env = c.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(errb.String(), "goroutine ") || strings.Contains(errb.String(), "panic:") {
		t.Fatalf("actas support %v printed a stack trace:\n%s", args, errb.String())
	}
	return out.String(), errb.String(), code
}

// login runs `actas support login --no-browser` and plays the browser: it
// reads the URL from stderr and follows it through the IdP (which signs
// the queued user in at once) back to the CLI's loopback redirect.
func (c *cliEnv) login(t *testing.T, u *testUser) {
	t.Helper()
	c.f.sup.mu.Lock()
	defer c.f.sup.mu.Unlock()
	c.f.sup.m.QueueUser(u)
	cmd := exec.Command(actasBin, "support", "login", "--no-browser", "--timeout", "20s")
	cmd.Env = c.env
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() {
		t.Fatal("login printed nothing")
	}
	first := sc.Text()
	if !strings.HasPrefix(first, c.f.sup.m.AuthorizationEndpoint()+"?") {
		t.Fatalf("--no-browser must print the authorization URL alone on its line, got %q", first)
	}
	au, _ := url.Parse(first)
	q := au.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" ||
		!strings.HasPrefix(q.Get("redirect_uri"), "http://127.0.0.1:") || q.Get("client_id") != "actas" {
		t.Fatalf("authorization request: %s", first)
	}
	resp, err := http.Get(first)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Signed in to actas") {
		t.Fatalf("loopback redirect: %s %s", resp.Status, page)
	}
	rest, _ := io.ReadAll(stderr)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("login: %v\n%s", err, rest)
	}
	if !strings.Contains(string(rest), "Signed in as "+u.Email) {
		t.Fatalf("login output: %s", rest)
	}
}

func (c *cliEnv) cacheFile(t *testing.T) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(c.dir, "actas", "*.json"))
	if len(m) != 1 {
		t.Fatalf("cache files: %v", m)
	}
	return m[0]
}

const shortTokenPolicy = `tokens: {access_ttl: 3s, refresh_ttl: 1h}`

func TestSupportCLI(t *testing.T) {
	f := newFixtureWith(t, strings.Replace(testPolicy, "tokens: {access_ttl: 15m, refresh_ttl: 12h}", shortTokenPolicy, 1),
		"  - id: strict\n    audience: product\n    require_dpop: true\n")
	c := newCLIEnv(t, f)

	// Discovery tells the CLI where and as whom to sign in.
	d := do(t, mustGet(f.base+"/.well-known/openid-configuration"))
	idp, _ := d.body["actas_support_idp"].(map[string]any)
	if idp["issuer"] != f.sup.m.Issuer() || idp["client_id"] != "actas" || d.str("actas_cli_client_id") != "actas-cli" ||
		d.str("userinfo_endpoint") != f.base+"/userinfo" {
		t.Fatalf("discovery: %s", d.raw)
	}

	if _, stderr, code := c.run(t, "token"); code != 3 || !strings.Contains(stderr, "not signed in") {
		t.Fatalf("token before login: %d %s", code, stderr)
	}
	c.login(t, &testUser{Sub: "eng-cli", Email: "eng-cli@support.example", Groups: []string{"support"}})
	cache := c.cacheFile(t)
	if st, _ := os.Stat(cache); st.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode %v", st.Mode().Perm())
	}

	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	grantID, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"production"}, "expires_in": 3600})

	// A wrong code is refused with its own status, and counted.
	if _, stderr, st := c.run(t, "redeem", "--tenant", "acme", "--code", wrongCode(code)); st != 4 || !strings.Contains(stderr, "invalid, expired or already used") {
		t.Fatalf("wrong code: %d %s", st, stderr)
	}
	_, stderr, st := c.run(t, "redeem", "--tenant", "acme", "--code", code)
	if st != 0 || !strings.Contains(stderr, "Acting as admin-of-acme in tenant acme: role manage") || !strings.Contains(stderr, grantID) {
		t.Fatalf("redeem: %d %s", st, stderr)
	}

	tok1, _, st := c.run(t, "token")
	tok1 = strings.TrimSpace(tok1)
	if st != 0 || strings.Count(tok1, ".") != 2 {
		t.Fatalf("token: %d %q", st, tok1)
	}
	var claims struct {
		Cnf struct{ JKT string } `json:"cnf"`
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok1, ".")[1])
	json.Unmarshal(payload, &claims)
	ir := f.introspect(t, tok1)
	cnf, _ := ir.body["cnf"].(map[string]any)
	if claims.Cnf.JKT == "" || ir.body["active"] != true || ir.str("token_type") != "DPoP" || cnf["jkt"] != claims.Cnf.JKT {
		t.Fatalf("bound token: cnf %q, introspection %s", claims.Cnf.JKT, ir.raw)
	}
	if again, _, _ := c.run(t, "token"); strings.TrimSpace(again) != tok1 {
		t.Fatal("a fresh token was not reused")
	}
	out, _, st := c.run(t, "status")
	if st != 0 || !strings.Contains(out, grantID) || !strings.Contains(out, "admin-of-acme") || !strings.Contains(out, "DPoP") ||
		!strings.Contains(out, "eng-cli (eng-cli@support.example)") {
		t.Fatalf("status: %d\n%s", st, out)
	}

	t.Run("bound token at /userinfo", func(t *testing.T) { testUserinfoDPoP(t, c, tok1) })
	t.Run("a stolen refresh token is useless without the key", func(t *testing.T) {
		var cached struct {
			Grants []struct {
				RefreshToken string `json:"refresh_token"`
			}
		}
		b, _ := os.ReadFile(cache)
		json.Unmarshal(b, &cached)
		r := f.form(t, "/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {"actas-cli"}, "refresh_token": {cached.Grants[0].RefreshToken}}, "", "")
		if r.status != 400 || r.str("error") != "invalid_dpop_proof" {
			t.Fatalf("refresh without proof: %d %s", r.status, r.raw)
		}
		thief, _ := dpop.NewKey()
		r = refreshWithProof(t, f, cached.Grants[0].RefreshToken, thief)
		if r.status != 400 || r.str("error") != "invalid_dpop_proof" {
			t.Fatalf("refresh with another key: %d %s", r.status, r.raw)
		}
	})

	// After expiry the CLI refreshes; the new token is live, the old one expired.
	time.Sleep(4 * time.Second)
	tok2, stderr, st := c.run(t, "token")
	tok2 = strings.TrimSpace(tok2)
	if st != 0 || tok2 == tok1 || !f.active(t, tok2) || f.active(t, tok1) {
		t.Fatalf("token after expiry: %d %s", st, stderr)
	}

	t.Run("require_dpop and proof replay at /token", func(t *testing.T) {
		_, code := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
		form := exchangeForm("acme", code, f.engineer(t, "eng-strict"))
		form.Set("client_id", "strict")
		if r := f.form(t, "/token", form, "", ""); r.status != 400 || r.str("error") != "invalid_dpop_proof" {
			t.Fatalf("require_dpop without proof: %d %s", r.status, r.raw)
		}
		key, _ := dpop.NewKey()
		proof, _ := key.Proof("POST", f.base+"/token", "", time.Now())
		if r := postWithProof(t, f.base+"/token", form, proof); r.status != 200 || r.str("token_type") != "DPoP" {
			t.Fatalf("require_dpop with proof: %d %s", r.status, r.raw)
		}
		// The same proof again (the code is spent, but the proof is refused first).
		if r := postWithProof(t, f.base+"/token", form, proof); r.status != 400 || r.str("error") != "invalid_dpop_proof" ||
			!strings.Contains(r.str("error_description"), "used before") {
			t.Fatalf("replayed proof at /token: %d %s", r.status, r.raw)
		}
	})

	// Guessing locks the engineer out, with its own status.
	locked := false
	for i := 0; i < 12 && !locked; i++ {
		_, stderr, st := c.run(t, "redeem", "--tenant", "acme", "--code", fmt.Sprintf("%06d", 900000+i))
		switch st {
		case 5:
			locked = strings.Contains(stderr, "locked out")
		case 4:
		default:
			t.Fatalf("wrong code %d: %d %s", i, st, stderr)
		}
	}
	if !locked {
		t.Fatal("repeated wrong codes never locked the engineer out (exit 5)")
	}

	// Logout ends the grant at the broker and removes the cache.
	if _, stderr, st := c.run(t, "logout"); st != 0 || !strings.Contains(stderr, "Ended 1 grant") {
		t.Fatalf("logout: %d %s", st, stderr)
	}
	if f.active(t, tok2) {
		t.Fatal("the token is active after logout")
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Fatalf("cache still there after logout: %v", err)
	}
	if _, stderr, st := c.run(t, "status"); st != 3 || !strings.Contains(stderr, "run 'actas support login'") {
		t.Fatalf("status after logout: %d %s", st, stderr)
	}
}

// testUserinfoDPoP: a bound token works at /userinfo only with the DPoP
// scheme and a fresh proof for this very request.
func testUserinfoDPoP(t *testing.T, c *cliEnv, tok string) {
	f := c.f
	get := func(scheme, proof string) resp {
		req := mustGet(f.base + "/userinfo")
		req.Header.Set("Authorization", scheme+" "+tok)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		return do(t, req)
	}
	if r := get("Bearer", ""); r.status != 401 || r.str("error") != "invalid_token" ||
		!strings.Contains(strings.Join(r.header.Values("WWW-Authenticate"), " "), `DPoP realm="actas", algs="ES256`) {
		t.Fatalf("bound token as a bearer: %d %s %v", r.status, r.raw, r.header)
	}
	proof := func(args ...string) string {
		out, stderr, st := c.run(t, append([]string{"proof"}, args...)...)
		if st != 0 {
			t.Fatalf("proof: %d %s", st, stderr)
		}
		return strings.TrimSpace(out)
	}
	p := proof("--url", f.base+"/userinfo")
	r := get("DPoP", p)
	if r.status != 200 || r.str("sub") != "admin-of-acme" || r.str("tenant") != "acme" || r.body["act"].(map[string]any)["sub"] != "eng-cli" {
		t.Fatalf("userinfo with proof: %d %s", r.status, r.raw)
	}
	if r := get("DPoP", p); r.status != 401 || r.str("error") != "invalid_dpop_proof" || !strings.Contains(r.str("error_description"), "used before") {
		t.Fatalf("replayed proof: %d %s", r.status, r.raw)
	}
	if r := get("DPoP", proof("--url", f.base+"/introspect")); r.status != 401 || !strings.Contains(r.str("error_description"), "htu") {
		t.Fatalf("proof for another URL: %d %s", r.status, r.raw)
	}
	if r := get("DPoP", proof("--method", "POST", "--url", f.base+"/userinfo")); r.status != 401 || !strings.Contains(r.str("error_description"), "htm") {
		t.Fatalf("proof for another method: %d %s", r.status, r.raw)
	}
	other, _ := dpop.NewKey()
	op, _ := other.Proof("GET", f.base+"/userinfo", tok, time.Now())
	if r := get("DPoP", op); r.status != 401 || r.str("error") != "invalid_dpop_proof" {
		t.Fatalf("proof by another key: %d %s", r.status, r.raw)
	}
}

func postWithProof(t *testing.T, u string, form url.Values, proof string) resp {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("DPoP", proof)
	return do(t, req)
}

func refreshWithProof(t *testing.T, f *fixture, rt string, key *dpop.Key) resp {
	proof, _ := key.Proof("POST", f.base+"/token", "", time.Now())
	return postWithProof(t, f.base+"/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {"actas-cli"}, "refresh_token": {rt}}, proof)
}

func wrongCode(code string) string {
	if code == "000000" {
		return "000001"
	}
	return "000000"
}

// TestSupportCLIFailures: clear messages and exit statuses, never a stack
// trace, for misuse and an unreachable broker.
func TestSupportCLIFailures(t *testing.T) {
	dir := t.TempDir()
	c := &cliEnv{dir: dir, env: append(childEnv(), "XDG_CONFIG_HOME="+dir, "ACTAS_BROKER=")}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"login", "--no-browser"}, 2, "no broker: pass --broker URL or set ACTAS_BROKER"},
		{[]string{"login", "--broker", "http://actas.example"}, 2, "must use https"},
		{[]string{"redeem", "--broker", "https://actas.example"}, 2, "--tenant and --code are required"},
		{[]string{"login", "--broker", "http://127.0.0.1:1"}, 6, "cannot reach the broker at http://127.0.0.1:1"},
		{[]string{"status", "--broker", "http://127.0.0.1:1"}, 3, "not signed in"},
		{[]string{"tokn"}, 2, `did you mean "token"?`},
	} {
		_, stderr, code := c.run(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: %d %q, want %d %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}
