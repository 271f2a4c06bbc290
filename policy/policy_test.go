package policy

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestBrokenPolicies loads every file under testdata/broken and compares
// the full error text, file:line:col and all, with its .golden file.
func TestBrokenPolicies(t *testing.T) {
	files, _ := filepath.Glob("testdata/broken/*.yaml")
	if len(files) < 25 {
		t.Fatalf("only %d broken policies in the corpus", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *policy.Error", err)
			}
			for _, p := range pe.Problems {
				if p.Line == 0 && !strings.Contains(p.Msg, "invalid YAML") {
					t.Errorf("problem without a line: %s", p.Msg)
				}
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				os.WriteFile(golden, []byte(err.Error()+"\n"), 0o644)
			}
			want, rerr := os.ReadFile(golden)
			if rerr != nil {
				t.Fatalf("no golden file (run with -update): %v", rerr)
			}
			if got := err.Error() + "\n"; got != string(want) {
				t.Errorf("error text changed:\n got: %s\nwant: %s", got, want)
			}
		})
	}
}

func TestOversizedFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	os.WriteFile(p, []byte("version: 1\n# "+strings.Repeat("x", MaxFileSize)+"\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("a file over 1 MiB was read: %v", err)
	}
}

func TestExamplePolicy(t *testing.T) {
	p, err := Load("../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if p.DefaultTTL != 24*time.Hour || p.MaxTTL != 180*24*time.Hour || !p.NeverGrant("users:write") || p.RuleCount() != 1 {
		t.Fatalf("sample policy defaults changed: %+v", p)
	}
	if env, _ := p.Environment("production"); env.MaxTTL != 5*24*time.Hour {
		t.Fatal("production cap is not 5d")
	}
}

const decisionPolicy = `version: 1
roles:
  - {name: monitor, scopes: [read]}
  - {name: manage,  scopes: [read, write]}
  - {name: admin,   scopes: [read, write, admin, users:write]}
never_grant_scopes: [users:write]
grants:
  default_ttl: 24h
  max_ttl: 30d
  granter_roles: [admin]
environments:
  production: {max_ttl: 5d, require_ticket: true}
  sandbox: {}
tickets:
  severity_max_ttl: {S3: 2d, S4: 8h}
engineers:
  require_groups: [support]
  require_mfa: true
  tiers:
    - {groups: [support-l1], max_role: monitor}
    - {groups: [support-l2], max_role: manage}
rules:
  - name: no-free-plans
    deny_if: 'has(granter.claims.plan) && granter.claims.plan in ["free", "trial"]'
    message: no support on free plans
  - name: no-weekend-production
    deny_if: '"production" in request.environments && request.ticket.startsWith("TEST-")'
    message: test tickets cannot open production
  - name: emea-only
    deny_if: 'has(engineer.sub) && has(engineer.claims.region) && engineer.claims.region != "emea"'
    message: this tenant is served from EMEA only
  - name: broken-at-runtime
    deny_if: 'request.resources.size() > 0 && int(request.resources[0]) > 0'
    message: never shown
`

func TestDecideGrant(t *testing.T) {
	p, err := Parse("decision.yaml", []byte(decisionPolicy))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	base := func() GrantRequest {
		return GrantRequest{
			Granter: Granter{Sub: "u", Role: "admin", Claims: map[string]any{"plan": "enterprise"}},
			Tenant:  Tenant{ID: "acme", SupportAccess: true},
			Role:    "manage", Environments: []string{"sandbox"}, Now: now,
		}
	}
	for _, tc := range []struct {
		name    string
		mod     func(*GrantRequest)
		rule    string // Denied.Rule, or Invalid.Field, or "" for allow
		invalid bool
		check   func(t *testing.T, d GrantDecision)
	}{
		{name: "ok/admin grants manage on sandbox", check: func(t *testing.T, d GrantDecision) {
			if d.TTL != 24*time.Hour || strings.Join(d.Scopes, " ") != "read write" || !d.ExpiresAt.Equal(now.Add(24*time.Hour)) {
				t.Fatalf("decision %+v", d)
			}
		}},
		{name: "ok/admin grants admin: never-grant scope stripped", mod: func(r *GrantRequest) { r.Role = "admin" }, check: func(t *testing.T, d GrantDecision) {
			if strings.Join(d.Scopes, " ") != "read write admin" {
				t.Fatalf("scopes %v", d.Scopes)
			}
		}},
		{name: "fail/support access off", mod: func(r *GrantRequest) { r.Tenant.SupportAccess = false }, rule: "support-access"},
		{name: "fail/non-admin without tenant setting", mod: func(r *GrantRequest) { r.Granter.Role = "manage" }, rule: "granter-roles"},
		{name: "ok/non-admin with tenant setting", mod: func(r *GrantRequest) { r.Granter.Role = "manage"; r.Tenant.AllowNonAdminGrants = true }},
		{name: "fail/non-admin above own role", mod: func(r *GrantRequest) {
			r.Granter.Role = "monitor"
			r.Tenant.AllowNonAdminGrants = true
		}, rule: "granter-ceiling"},
		{name: "fail/granter role unknown", mod: func(r *GrantRequest) { r.Granter.Role = "owner" }, rule: "granter-role"},
		{name: "fail/unknown role", mod: func(r *GrantRequest) { r.Role = "root" }, rule: "role", invalid: true},
		{name: "fail/unknown environment", mod: func(r *GrantRequest) { r.Environments = []string{"staging"} }, rule: "environments", invalid: true},
		{name: "fail/duplicate environment", mod: func(r *GrantRequest) { r.Environments = []string{"sandbox", "sandbox"} }, rule: "environments", invalid: true},
		{name: "fail/expiry beyond global max", mod: func(r *GrantRequest) { r.TTL = 31 * 24 * time.Hour }, rule: "expires_in", invalid: true},
		{name: "fail/production requires ticket", mod: func(r *GrantRequest) { r.Environments = []string{"production"} }, rule: "ticket", invalid: true},
		{name: "fail/expiry beyond production cap", mod: func(r *GrantRequest) {
			r.Environments = []string{"production"}
			r.Ticket = "ZD-1"
			r.TTL = 6 * 24 * time.Hour
		}, rule: "expires_in", invalid: true},
		{name: "ok/default capped by environment", mod: func(r *GrantRequest) {
			r.Environments = []string{"production", "sandbox"}
			r.Ticket = "ZD-1"
		}, check: func(t *testing.T, d GrantDecision) {
			if d.TTL != 24*time.Hour {
				t.Fatalf("ttl %s", d.TTL)
			}
		}},
		{name: "fail/rule: free plan", mod: func(r *GrantRequest) { r.Granter.Claims["plan"] = "free" }, rule: "no-free-plans"},
		{name: "ok/rule guarded by has(): no plan claim", mod: func(r *GrantRequest) { r.Granter.Claims = nil }},
		{name: "fail/rule: test ticket on production", mod: func(r *GrantRequest) {
			r.Environments = []string{"production"}
			r.Ticket = "TEST-1"
		}, rule: "no-weekend-production"},
		{name: "fail/rule that errors denies", mod: func(r *GrantRequest) { r.Resources = []string{"ws-1"} }, rule: "broken-at-runtime"},
		{name: "fail/bad resource", mod: func(r *GrantRequest) { r.Resources = []string{"a b"} }, rule: "resources", invalid: true},
		{name: "fail/S4 ticket caps expiry at 8h", mod: func(r *GrantRequest) { r.Ticket, r.Tick = "ZD-1", Ticket{"zendesk", "S4"}; r.TTL = 9 * time.Hour }, rule: "expires_in", invalid: true},
		{name: "ok/S4 ticket caps the default to 8h", mod: func(r *GrantRequest) { r.Ticket, r.Tick = "ZD-1", Ticket{"zendesk", "S4"} }, check: func(t *testing.T, d GrantDecision) {
			if d.TTL != 8*time.Hour {
				t.Fatalf("ttl %s", d.TTL)
			}
		}},
		{name: "ok/S1 ticket has no cap of its own", mod: func(r *GrantRequest) { r.Ticket, r.Tick = "ZD-1", Ticket{"zendesk", "S1"}; r.TTL = 20 * 24 * time.Hour }},
		{name: "fail/unknown severity", mod: func(r *GrantRequest) { r.Ticket, r.Tick = "ZD-1", Ticket{"zendesk", "P1"} }, rule: "ticket.severity", invalid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			if tc.mod != nil {
				tc.mod(&r)
			}
			d, err := p.DecideGrant(r)
			var den *Denied
			var inv *Invalid
			switch {
			case tc.rule == "":
				if err != nil {
					t.Fatalf("denied: %v\ntrail: %v", err, d.Trail)
				}
				if tc.check != nil {
					tc.check(t, d)
				}
			case tc.invalid:
				if !errors.As(err, &inv) || inv.Field != tc.rule {
					t.Fatalf("got %v, want Invalid{%s}", err, tc.rule)
				}
			default:
				if !errors.As(err, &den) || den.Rule != tc.rule {
					t.Fatalf("got %v, want Denied{%s}", err, tc.rule)
				}
			}
			if len(d.Trail) == 0 && tc.rule != "role" && !tc.invalid {
				t.Error("decision without a trail")
			}
		})
	}
}

func TestDecideRedeem(t *testing.T) {
	p, err := Parse("decision.yaml", []byte(decisionPolicy))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	grant := func(role string) IssuedGrant {
		return IssuedGrant{Tenant: Tenant{ID: "acme", SupportAccess: true}, Granter: Granter{Sub: "u", Role: "admin"},
			Role: role, Environments: []string{"sandbox"}, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
	}
	eng := func(groups ...string) Engineer {
		return Engineer{Sub: "e", Iss: "https://support", Groups: groups, MFA: true, Claims: map[string]any{"region": "emea"}}
	}
	for _, tc := range []struct {
		name string
		e    Engineer
		g    IssuedGrant
		role string // effective role, or "" when denied
		rule string
	}{
		{"ok/plain support engineer keeps the role", eng("support"), grant("admin"), "admin", ""},
		{"ok/L1 capped to monitor", eng("support", "support-l1"), grant("admin"), "monitor", ""},
		{"ok/L2 capped to manage", eng("support", "support-l2"), grant("admin"), "manage", ""},
		{"ok/L1 and L2: the most restrictive tier wins", eng("support", "support-l2", "support-l1"), grant("manage"), "monitor", ""},
		{"ok/cap never raises", eng("support", "support-l2"), grant("monitor"), "monitor", ""},
		{"fail/not in required group", eng("sales"), grant("monitor"), "", "engineers.require_groups"},
		{"fail/no MFA", func() Engineer { e := eng("support"); e.MFA = false; return e }(), grant("monitor"), "", "engineers.require_mfa"},
		{"fail/rule at redemption", func() Engineer { e := eng("support"); e.Claims["region"] = "us"; return e }(), grant("monitor"), "", "emea-only"},
		{"fail/grant past today's cap", eng("support"), func() IssuedGrant { g := grant("monitor"); g.ExpiresAt = now.Add(40 * 24 * time.Hour); return g }(), "", "grants.max_ttl"},
		{"fail/role removed from policy", eng("support"), grant("superuser"), "", "roles"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := p.DecideRedeem(tc.e, tc.g, now)
			if tc.rule == "" {
				if err != nil || d.Role != tc.role {
					t.Fatalf("got %q, %v; want %q\ntrail %v", d.Role, err, tc.role, d.Trail)
				}
				return
			}
			var den *Denied
			if !errors.As(err, &den) || den.Rule != tc.rule {
				t.Fatalf("got %v, want Denied{%s}", err, tc.rule)
			}
		})
	}
	// StillAllows: a token may keep at most what the decision allows now.
	if err := p.StillAllows(eng("support", "support-l1"), grant("admin"), "monitor", now); err != nil {
		t.Fatalf("monitor token under an L1 cap: %v", err)
	}
	if err := p.StillAllows(eng("support", "support-l1"), grant("admin"), "admin", now); err == nil {
		t.Fatal("an admin token survived an L1 cap")
	}
}

// BenchmarkDecideGrant measures one grant decision with five rules.
func BenchmarkDecideGrant(b *testing.B) {
	doc := strings.Replace(decisionPolicy, "  - name: broken-at-runtime\n    deny_if: 'request.resources.size() > 0 && int(request.resources[0]) > 0'\n    message: never shown\n",
		`  - name: max-week
    deny_if: 'request.ttl > 7 * 24 * 3600'
    message: at most a week
  - name: no-admin-on-weekends
    deny_if: 'request.role == "admin" && now.getDayOfWeek() == 0'
    message: no admin grants on Sundays
`, 1)
	p, err := Parse("bench.yaml", []byte(doc))
	if err != nil {
		b.Fatal(err)
	}
	if p.RuleCount() != 5 {
		b.Fatalf("%d rules", p.RuleCount())
	}
	r := GrantRequest{
		Granter: Granter{Sub: "u", Role: "admin", Claims: map[string]any{"plan": "enterprise", "email": "a@b"}},
		Tenant:  Tenant{ID: "acme", SupportAccess: true}, Role: "manage",
		Environments: []string{"production"}, Resources: []string{"ws-1"}, Ticket: "ZD-1",
		Now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC),
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := p.DecideGrant(r); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/broken/*.yaml")
	seeds = append(seeds, "../examples/policy.yaml")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	f.Add([]byte(decisionPolicy))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || len(pe.Problems) == 0 {
				t.Fatalf("error is not a positioned *policy.Error: %v", err)
			}
			return
		}
		// An accepted policy is internally consistent.
		if len(p.Roles()) == 0 || p.MaxTTL <= 0 || p.DefaultTTL > p.MaxTTL || p.AccessTTL > p.RefreshTTL {
			t.Fatalf("accepted an inconsistent policy: %+v", p)
		}
		for _, n := range p.EnvironmentNames() {
			if e, _ := p.Environment(n); e.MaxTTL > p.MaxTTL {
				t.Fatalf("accepted environment %s above the global max", n)
			}
		}
	})
}

func TestDecideToggleAndAction(t *testing.T) {
	doc := strings.Replace(decisionPolicy, "rules:\n", `rules:
  - name: no-admin-grants
    deny_if: 'request.action == "grant" && request.role == "admin"'
    message: no admin grants
`, 1)
	p, err := Parse("toggle.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	admin := Granter{Sub: "ada", Role: "admin", Claims: map[string]any{"plan": "enterprise"}}
	if err := p.DecideToggle(ToggleRequest{Granter: admin, Tenant: Tenant{ID: "acme", SupportAccess: true}, Now: now}); err != nil {
		t.Fatalf("ok/enterprise admin turns support on: %v", err)
	}
	free := Granter{Sub: "fred", Role: "admin", Claims: map[string]any{"plan": "free"}}
	var d *Denied
	if err := p.DecideToggle(ToggleRequest{Granter: free, Tenant: Tenant{ID: "f", SupportAccess: true}, Now: now}); !errors.As(err, &d) || d.Rule != "no-free-plans" {
		t.Fatalf("fail/free plan toggles: %v", err)
	}
	// request.action tells grant from toggle: the admin-grant rule does not
	// touch the toggle but denies the grant.
	_, err = p.DecideGrant(GrantRequest{Granter: admin, Tenant: Tenant{ID: "acme", SupportAccess: true}, Role: "admin",
		Environments: []string{"sandbox"}, Now: now})
	if !errors.As(err, &d) || d.Rule != "no-admin-grants" {
		t.Fatalf("fail/admin grant under the action rule: %v", err)
	}
}
