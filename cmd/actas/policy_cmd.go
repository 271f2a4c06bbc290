package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/actas/actas/internal/strictyaml"
	"github.com/actas/actas/policy"
)

func policyCheck(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy check", "FILE...", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	failed := false
	for _, path := range fs.Args() {
		p, err := policy.Load(path)
		if err != nil {
			failed = true
			fmt.Fprintln(stderr, err)
			continue
		}
		roles := p.Roles()
		approvals := ""
		if n := p.ApprovalCount(); n > 0 {
			approvals = fmt.Sprintf(", %d approval rules", n)
		}
		fmt.Fprintf(stdout, "%s: ok: %d roles, %d environments, %d rules%s, max_ttl %s, sha256 %s\n",
			path, len(roles), len(p.EnvironmentNames()), p.RuleCount(), approvals, fmtDuration(p.MaxTTL), p.SHA256[:12])
	}
	if failed {
		return exitError{1}
	}
	return nil
}

// listFlag collects a comma-separated or repeated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// claimsFlag collects key=value claims (values parsed as JSON if they can be).
type claimsFlag map[string]any

func (c claimsFlag) String() string { return "" }
func (c claimsFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	var j any
	if json.Unmarshal([]byte(val), &j) == nil {
		c[k] = j
	} else {
		c[k] = val
	}
	return nil
}

func policyExplain(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy explain", "--policy FILE --granter-role ROLE --role ROLE --env ENV [flags]", stderr)
	file := fs.String("policy", "", "policy file (required)")
	granterRole := fs.String("granter-role", "", "the granting user's role (required)")
	granterSub := fs.String("granter-sub", "user", "the granting user's subject")
	gclaims := claimsFlag{}
	fs.Var(gclaims, "granter-claim", "a claim of the granter's token, key=value (repeatable)")
	role := fs.String("role", "", "requested role (required)")
	var envs, resources, groups listFlag
	fs.Var(&envs, "env", "requested environment(s), comma-separated or repeated (required)")
	fs.Var(&resources, "resource", "requested resource(s)")
	ttl := fs.String("ttl", "", "requested lifetime (s m h d); default: the policy default")
	ticket := fs.String("ticket", "", "ticket reference")
	nonAdmin := fs.Bool("tenant-allows-non-admin", false, "the tenant allows non-admin grants")
	fs.Var(&groups, "engineer-groups", "also decide redemption for an engineer in these groups")
	mfa := fs.Bool("engineer-mfa", false, "the engineer signed in with MFA")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *file == "" || *granterRole == "" || *role == "" || len(envs) == 0 || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	var d time.Duration
	if *ttl != "" {
		var err error
		if d, err = strictyaml.ParseDuration(*ttl); err != nil {
			return fmt.Errorf("--ttl: %w", err)
		}
	}
	p, err := policy.Load(*file)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	req := policy.GrantRequest{
		Granter: policy.Granter{Sub: *granterSub, Role: *granterRole, Claims: gclaims},
		Tenant:  policy.Tenant{ID: "tenant", SupportAccess: true, AllowNonAdminGrants: *nonAdmin},
		Role:    *role, Environments: envs, Resources: resources, TTL: d, Ticket: *ticket, Now: now,
	}
	gd, gerr := p.DecideGrant(req)
	out := map[string]any{"policy_sha256": p.SHA256, "grant": explainResult(gerr, gd.Trail)}
	if gerr == nil {
		out["grant"].(map[string]any)["effective"] = map[string]any{
			"role": gd.Role, "scopes": gd.Scopes, "environments": gd.Environments, "resources": gd.Resources,
			"ttl": fmtDuration(gd.TTL), "expires_at": gd.ExpiresAt.Format(time.RFC3339),
		}
		if groups != nil || *mfa {
			ig := policy.IssuedGrant{Tenant: req.Tenant, Granter: req.Granter, Role: gd.Role, Environments: gd.Environments,
				Resources: gd.Resources, Ticket: *ticket, CreatedAt: now, ExpiresAt: gd.ExpiresAt}
			rd, rerr := p.DecideRedeem(policy.Engineer{Sub: "engineer", Iss: "support", Groups: groups, MFA: *mfa}, ig, now)
			r := explainResult(rerr, rd.Trail)
			if rerr == nil {
				r["effective"] = map[string]any{"role": rd.Role, "scopes": rd.Scopes}
			}
			out["redeem"] = r
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	} else {
		printExplain(stdout, out)
	}
	if gerr != nil {
		return exitError{1}
	}
	if r, ok := out["redeem"].(map[string]any); ok && r["decision"] != "allow" {
		return exitError{1}
	}
	return nil
}

func explainResult(err error, trail []string) map[string]any {
	r := map[string]any{"decision": "allow", "trail": trail}
	var d *policy.Denied
	var inv *policy.Invalid
	switch {
	case errors.As(err, &d):
		r["decision"], r["rule"], r["reason"] = "deny", d.Rule, d.Reason
	case errors.As(err, &inv):
		r["decision"], r["rule"], r["reason"] = "invalid", inv.Field, inv.Reason
	case err != nil:
		r["decision"], r["reason"] = "error", err.Error()
	}
	return r
}

func printExplain(w io.Writer, out map[string]any) {
	fmt.Fprintf(w, "policy sha256 %s\n", out["policy_sha256"])
	for _, phase := range []string{"grant", "redeem"} {
		r, ok := out[phase].(map[string]any)
		if !ok {
			continue
		}
		fmt.Fprintf(w, "\n%s: %s", phase, strings.ToUpper(r["decision"].(string)))
		if r["rule"] != nil {
			fmt.Fprintf(w, " by %s: %s", r["rule"], r["reason"])
		}
		fmt.Fprintln(w)
		for _, t := range r["trail"].([]string) {
			fmt.Fprintf(w, "  - %s\n", t)
		}
		if e, ok := r["effective"].(map[string]any); ok {
			for _, k := range []string{"role", "scopes", "environments", "resources", "ttl", "expires_at"} {
				if v, ok := e[k]; ok {
					fmt.Fprintf(w, "  %-13s %v\n", k, v)
				}
			}
		}
	}
}

func fmtDuration(d time.Duration) string { return strictyaml.FormatDuration(d) }

var _ = flag.ErrHelp
