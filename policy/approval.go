package policy

import (
	"fmt"
	"strings"
	"time"

	"cel.dev/cel-go/common/types"

	"github.com/actas/actas/internal/strictyaml"
)

// approvalSpec is one entry of approval: in the file.
type approvalSpec struct {
	Name      string               `yaml:"name"`
	RequireIf string               `yaml:"require_if"`
	Approvers *int                 `yaml:"approvers"`
	Within    *strictyaml.Duration `yaml:"within"`
}

type approvalRule struct {
	*rule
	approvers int
	within    time.Duration
}

// Approval says a grant waits for other tenant admins.
type Approval struct {
	Rule      string
	Approvers int           // distinct admins, never the granter
	Within    time.Duration // unapproved grants end after this
}

const maxApprovalWithin = 30 * 24 * time.Hour

func (b *builder) approvals(f *file, pol *Policy) {
	seen := map[string]bool{}
	for i, a := range f.Approval {
		if !nameRE.MatchString(a.Name) {
			b.fail(p("approval", i, "name"), "approval name %q must be lowercase letters, digits, - or _", a.Name)
		} else if seen[a.Name] {
			b.fail(p("approval", i, "name"), "approval %q is defined twice", a.Name)
		}
		seen[a.Name] = true
		n := 1
		if a.Approvers != nil {
			n = *a.Approvers
		}
		if n < 1 || n > 10 {
			b.fail(p("approval", i, "approvers"), "approvers must be between 1 and 10, got %d", n)
		}
		within := b.duration(a.Within, 24*time.Hour, p("approval", i, "within"))
		if within > maxApprovalWithin || within < time.Second {
			b.fail(p("approval", i, "within"), "within must be between 1s and 30d, got %s", fd(within))
		}
		if strings.TrimSpace(a.RequireIf) == "" {
			b.fail(p("approval", i), "approval %q needs require_if", a.Name)
			continue
		}
		compiled, err := compileRule(ruleSpec{Name: a.Name, DenyIf: a.RequireIf})
		if err != nil {
			b.fail(p("approval", i, "require_if"), "approval %q: %s", a.Name, strings.Replace(err.Error(), "deny_if", "require_if", 1))
			continue
		}
		pol.approvals = append(pol.approvals, &approvalRule{rule: compiled, approvers: n, within: within})
	}
}

// NeedsApproval returns the first approval entry a grant request matches,
// with the same variables as rules (request.action "grant"), or nil. An
// entry that cannot be evaluated requires approval (fail closed).
func (p *Policy) NeedsApproval(r GrantRequest, d GrantDecision) *Approval {
	if len(p.approvals) == 0 {
		return nil
	}
	vars := map[string]any{
		"granter":  map[string]any{"sub": r.Granter.Sub, "role": r.Granter.Role, "claims": claimsOrEmpty(r.Granter.Claims)},
		"request":  requestVars(ActionGrant, d.Role, d.Environments, d.Resources, d.TTL, r.Ticket, r.Tick),
		"tenant":   tenantVars(r.Tenant),
		"engineer": map[string]any{},
		"now":      r.Now,
	}
	for _, a := range p.approvals {
		out, _, err := a.prg.Eval(vars)
		if err != nil || out != types.False {
			return &Approval{Rule: a.name, Approvers: a.approvers, Within: a.within}
		}
	}
	return nil
}

// String describes an approval for the trail and the audit.
func (a *Approval) String() string {
	return fmt.Sprintf("%s: %d approver(s) within %s", a.Rule, a.Approvers, fd(a.Within))
}

// ApprovalCount is how many approval entries the policy has.
func (p *Policy) ApprovalCount() int { return len(p.approvals) }
