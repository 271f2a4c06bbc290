package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"
)

func runActas(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return runActasEnv(t, nil, args...)
}

func TestPolicyCLI(t *testing.T) {
	out, code := runActas(t, "policy", "check", "../examples/policy.yaml")
	if code != 0 || !strings.Contains(out, "ok: 3 roles, 2 environments, 1 rules, max_ttl 180d") {
		t.Fatalf("check sample: %d %s", code, out)
	}
	broken := filepath.Join(t.TempDir(), "broken.yaml")
	os.WriteFile(broken, []byte("version: 1\nroles: []\nbogus: 1\n"), 0o600)
	out, code = runActas(t, "policy", "check", "../examples/policy.yaml", broken)
	if code != 1 || !strings.Contains(out, broken+":3:1: unknown key \"bogus\"") {
		t.Fatalf("check broken: %d %s", code, out)
	}
	if _, code := runActas(t, "policy", "check"); code != 2 {
		t.Fatalf("misuse must exit 2, got %d", code)
	}

	out, code = runActas(t, "policy", "explain", "--policy", "../examples/policy.yaml", "--granter-role", "admin",
		"--role", "admin", "--env", "production", "--ttl", "2d", "--engineer-groups", "support,support-l1", "--json")
	var ex struct {
		Grant struct {
			Decision  string
			Effective struct {
				Role   string
				Scopes []string
				TTL    string
			}
			Trail []string
		}
		Redeem struct {
			Decision  string
			Effective struct{ Role string }
			Trail     []string
		}
	}
	if err := json.Unmarshal([]byte(out), &ex); err != nil || code != 0 {
		t.Fatalf("explain --json: %d %v\n%s", code, err, out)
	}
	if ex.Grant.Decision != "allow" || strings.Join(ex.Grant.Effective.Scopes, " ") != "read write admin" || ex.Grant.Effective.TTL != "2d" ||
		ex.Redeem.Effective.Role != "monitor" || len(ex.Grant.Trail) == 0 {
		t.Fatalf("explain: %+v", ex)
	}
	out, code = runActas(t, "policy", "explain", "--policy", "../examples/policy.yaml", "--granter-role", "admin",
		"--granter-claim", "plan=trial", "--role", "monitor", "--env", "sandbox")
	if code != 1 || !strings.Contains(out, "grant: DENY by no-free-plans: support access is not available on free or trial plans") {
		t.Fatalf("explain deny: %d %s", code, out)
	}
}

func TestAuditVerifyCLI(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	id, code := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
	f.exchange(t, "acme", code, f.engineer(t, "eng-v"))
	f.api(t, "DELETE", "/api/v1/tenants/acme/grants/"+id, admin, nil)
	f.stop(t)

	verify := func() (string, int) {
		cmd := exec.Command(actasBin, "audit", "verify", "--config", f.cfgPath)
		cmd.Env = f.env
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		return string(out), 0
	}
	out, code2 := verify()
	if code2 != 0 || !strings.Contains(out, "ok: ") {
		t.Fatalf("verify untouched: %d %s", code2, out)
	}
	db, err := sqlx.Open("sqlite", filepath.Join(f.dir, "actas.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Rewrite history: the grant was for admin, not monitor.
	if _, err := db.Exec(`UPDATE audit_events SET detail = replace(detail, '"monitor"', '"admin"') WHERE action = 'grant.create' AND tenant_id = 'acme'`); err != nil {
		t.Fatal(err)
	}
	out, code2 = verify()
	if code2 != 1 || !strings.Contains(out, `tenant "acme" breaks at seq 2`) || !strings.Contains(out, "edited") {
		t.Fatalf("verify tampered: %d %s", code2, out)
	}
}

// runActasEnv is runActas with extra environment variables.
func runActasEnv(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(actasBin, args...)
	cmd.Env = append(childEnv(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatal(err)
	return "", -1
}

// Issue 9: a newcomer's command line: version, complete help, help for
// every group, and "did you mean" for typos.
func TestCLIHelp(t *testing.T) {
	cases := []struct {
		args     []string
		code     int
		contains []string
	}{
		{[]string{"--version"}, 0, []string{"actas ", "go1."}},
		{[]string{"version"}, 0, []string{"actas "}},
		{[]string{"--help"}, 0, []string{"rotate", "verify", "export", "explain", "actas keys rotate --config actas.yaml"}},
		{[]string{}, 2, []string{"usage: actas <command>"}},
		{[]string{"policy", "--help"}, 0, []string{"check", "explain"}},
		{[]string{"keys"}, 2, []string{"list", "rotate"}},
		{[]string{"sevre"}, 2, []string{`unknown command "sevre"; did you mean "serve"?`}},
		{[]string{"audit", "verfy"}, 2, []string{`did you mean "verify"?`}},
		{[]string{"migrate", "--confg", "x.yaml"}, 2, []string{"did you mean --config?"}},
		{[]string{"support", "--help"}, 0, []string{"login", "redeem", "token", "proof", "status", "logout",
			"actas support login --broker https://actas.example", "actas support redeem --tenant acme --code 123456"}},
		{[]string{"support", "redeem", "--help"}, 0, []string{"--tenant", "--code", "--no-dpop", "--broker"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, code := runActas(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, out)
			}
			for _, c := range tc.contains {
				if !strings.Contains(out, c) {
					t.Fatalf("output lacks %q:\n%s", c, out)
				}
			}
		})
	}
}

// Issue 9: admin commands that read storage need only storage and the root
// secret, not the IdPs' or clients' secrets; a mistyped ACTAS_ variable is
// an error naming it.
func TestAdminCommandsNeedOnlyStorage(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	f.stop(t)
	// The config names ACTAS_PRODUCT_SECRET and ACTAS_OTHER_SECRET, which
	// this environment does not have.
	for _, args := range [][]string{{"keys", "list"}, {"audit", "verify"}, {"audit", "export", "--tenant", "acme"}, {"migrate"}} {
		out, code := runActas(t, append(args, "--config", f.cfgPath)...)
		if code != 0 {
			t.Fatalf("%v without client secrets: exit %d\n%s", args, code, out)
		}
	}
	out, code := runActasEnv(t, []string{"ACTAS_STORGE=sqlite://elsewhere.db"}, "keys", "list", "--config", f.cfgPath)
	if code != 1 || !strings.Contains(out, "ACTAS_STORGE") || !strings.Contains(out, "did you mean ACTAS_STORAGE?") {
		t.Fatalf("a mistyped variable: exit %d\n%s", code, out)
	}
}

// Issue 9: the dev setup takes its port before printing anything, and a
// restart keeps the identity providers, so tokens printed before still
// work.
func TestDevSetupRestart(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	start := func() (*exec.Cmd, *bytes.Buffer) {
		os.Remove(filepath.Join(dir, "actas-dev.env")) // written anew once ready
		cmd := exec.Command(actasBin, "serve", "--listen", addr)
		cmd.Dir, cmd.Env = dir, childEnv()
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			if b, err := os.ReadFile(filepath.Join(dir, "actas-dev.env")); err == nil && len(b) > 0 {
				return cmd, out
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("dev setup not ready:\n%s", out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	stop := func(cmd *exec.Cmd) {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("dev setup exit: %v", err)
		}
	}
	cmd, _ := start()
	vars, _ := os.ReadFile(filepath.Join(dir, "actas-dev.env"))
	admin := ""
	for _, l := range strings.Split(string(vars), "\n") {
		if v, ok := strings.CutPrefix(l, "export ADMIN="); ok {
			admin = v
		}
	}
	// A second server on the same address fails at once, printing no banner.
	busy := exec.Command(actasBin, "serve", "--listen", addr)
	busy.Dir, busy.Env = t.TempDir(), childEnv()
	out, err := busy.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already in use") || strings.Contains(string(out), "export ADMIN") {
		t.Fatalf("busy port: %v\n%s", err, out)
	}
	stop(cmd)
	cmd, _ = start()
	defer stop(cmd)
	s := &server{base: "http://" + addr}
	if r := s.api(t, "GET", "/api/v1/tenants/acme/support-access", admin, nil); r.status != 200 {
		t.Fatalf("a token printed before the restart: %d %s", r.status, r.raw)
	}
	// The banner's customer page signs in as ada at once.
	b := newBrowser(t, true)
	b.run(t, "open the dev page", chromedp.Navigate(s.base+"/ui/"))
	b.run(t, "sign in", chromedp.Click(chromedp.Search(`//a[starts-with(normalize-space(), "Sign in with")]`)))
	b.waitText(t, "ada@acme.example · acme · admin")
}
