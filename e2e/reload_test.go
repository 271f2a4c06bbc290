package e2e

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

func (s *server) readyz(t *testing.T) map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", s.base+"/readyz", nil)
	return do(t, req).body
}

// waitPolicy waits until the server reports a policy other than old.
func (s *server) waitPolicy(t *testing.T, old string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if sha := s.readyz(t)["policy_sha256"].(string); sha != old {
			return sha
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("policy not reloaded within 10s (still %s)", old)
	return ""
}

func (s *server) metric(t *testing.T, name string) string {
	resp, err := http.Get(s.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimPrefix(line, name+" ")
		}
	}
	return ""
}

func TestPolicyHotReload(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	redeem := func(role, env string) string {
		_, code := f.grant(t, "acme", admin, map[string]any{"role": role, "environments": []string{env}})
		tr := f.exchange(t, "acme", code, f.engineer(t, "eng-h"))
		if tr.status != 200 {
			t.Fatalf("exchange: %s", tr.raw)
		}
		return tr.str("access_token")
	}
	manageProd := redeem("manage", "production")
	monitorSandbox := redeem("monitor", "sandbox")
	adminSandbox := redeem("admin", "sandbox")
	if !f.active(t, manageProd) || !f.active(t, monitorSandbox) || !f.active(t, adminSandbox) {
		t.Fatal("setup tokens inactive")
	}
	policyPath := filepath.Join(f.dir, "policy.yaml")
	sha0 := f.readyz(t)["policy_sha256"].(string)

	// Tighten: a new deny rule for manage on production, and L1-style
	// tier for everyone in "support" capping at manage.
	tightened := withNoManageInProduction()
	tightened = strings.Replace(tightened, "    - {groups: [support-l1], max_role: monitor}",
		"    - {groups: [support-l1], max_role: monitor}\n    - {groups: [support], max_role: manage}", 1)
	// Write as editors do: a new file renamed over the old one.
	tmp := policyPath + ".tmp"
	os.WriteFile(tmp, []byte(tightened), 0o600)
	os.Rename(tmp, policyPath)
	sha1 := f.waitPolicy(t, sha0)

	if f.active(t, manageProd) {
		t.Fatal("a token the new deny rule forbids is still active")
	}
	if f.active(t, adminSandbox) {
		t.Fatal("a token above the engineer's new tier cap is still active")
	}
	if !f.active(t, monitorSandbox) {
		t.Fatal("a token the new policy still allows went inactive")
	}
	// New grants obey the new rule too.
	if r := f.api(t, "POST", "/api/v1/tenants/acme/grants", admin, map[string]any{"role": "manage", "environments": []string{"production"}}); r.status != 403 || r.str("rule") != "no-manage-in-production" {
		t.Fatalf("grant under the new rule: %d %s", r.status, r.raw)
	}

	// A broken edit keeps the last good policy.
	failures := f.metric(t, "actas_policy_reload_failures_total")
	os.WriteFile(policyPath, []byte(tightened+"\nroles: [oops\n"), 0o600)
	deadline := time.Now().Add(10 * time.Second)
	for f.metric(t, "actas_policy_reload_failures_total") == failures {
		if time.Now().After(deadline) {
			t.Fatal("the broken policy was not noticed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if sha := f.readyz(t)["policy_sha256"]; sha != sha1 {
		t.Fatalf("policy changed to %v after a broken edit", sha)
	}
	if !f.active(t, monitorSandbox) || f.active(t, manageProd) {
		t.Fatal("decisions changed after a broken edit")
	}

	// Loosening again never widens: the original policy back, the tokens
	// come back as they were, never above what was issued.
	os.WriteFile(policyPath, []byte(testPolicy), 0o600)
	sha2 := f.waitPolicy(t, sha1)
	ir := f.introspect(t, manageProd)
	if ir.body["active"] != true || ir.str("scope") != "read write" {
		t.Fatalf("after loosening: %s", ir.raw)
	}

	// Mounted as Kubernetes mounts a ConfigMap: the path is a symlink
	// through "..data", and an update swaps "..data" to a new directory.
	link := func(target, name string) {
		if err := os.Symlink(target, filepath.Join(f.dir, name+".new")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(f.dir, name+".new"), filepath.Join(f.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for v, content := range []string{testPolicy, tightened} {
		dir := filepath.Join(f.dir, "..v"+string(rune('1'+v)))
		os.Mkdir(dir, 0o700)
		if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	link("..v1", "..data")
	link("..data/policy.yaml", "policy.yaml") // the same content: nothing to reload
	link("..v2", "..data")
	if f.waitPolicy(t, sha2) != sha1 {
		t.Fatal("the swapped ConfigMap's policy is not the one in force")
	}
}

// Issue 9: with the policy beside the SQLite database, one bad edit is one
// log line and one audit event, however much the database writes after it
// (the watcher used to react to the database's own writes).
func TestBadPolicyEditReportedOnce(t *testing.T) {
	f := newFixture(t)
	admin := f.admin(t, "acme")
	policyPath := filepath.Join(f.dir, "policy.yaml")
	if err := os.WriteFile(policyPath, []byte("version: 1\nroles: [}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) { // database writes beside the policy
		f.api(t, "PUT", "/api/v1/tenants/acme/support-access", admin, map[string]any{"enabled": true})
		f.api(t, "PUT", "/api/v1/tenants/acme/support-access", admin, map[string]any{"enabled": false})
	}
	f.cmd.Process.Signal(syscall.SIGHUP) // a manual reload of the same bad content
	time.Sleep(500 * time.Millisecond)
	f.stop(t) // the logs are complete (and safe to read) once it has exited
	db, err := sqlx.Open("sqlite", filepath.Join(f.dir, "actas.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var failures int
	if err := db.Get(&failures, `SELECT COUNT(*) FROM audit_events WHERE action = 'policy.reload' AND outcome = 'failure'`); err != nil {
		t.Fatal(err)
	}
	logLines := strings.Count(f.logs.String(), "policy reload rejected")
	if failures != 1 || logLines != 1 {
		t.Fatalf("one bad edit gave %d audit events and %d log lines, want 1 and 1", failures, logLines)
	}
}

// withNoManageInProduction is the test policy plus a rule refusing manage
// in production.
func withNoManageInProduction() string {
	return strings.Replace(testPolicy, "rules:\n", `rules:
  - name: no-manage-in-production
    deny_if: 'request.role == "manage" && "production" in request.environments'
    message: manage is no longer allowed in production
`, 1)
}
