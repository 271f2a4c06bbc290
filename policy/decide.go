package policy

import (
	"fmt"
	"regexp"
	"slices"
	"time"
)

// Denied is a decision against a request: Rule names what denied it (a rule
// name, or a built-in check such as "granter-ceiling") and Reason is the
// human text shown to the requester.
type Denied struct {
	Rule   string
	Reason string
}

func (d *Denied) Error() string { return fmt.Sprintf("denied by %s: %s", d.Rule, d.Reason) }

// Invalid is a request that no policy could allow as written: an unknown
// role, an expiry past the maximum. Field names the request field.
type Invalid struct {
	Field  string
	Reason string
}

func (e *Invalid) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

// Granter is the customer user asking for a grant.
type Granter struct {
	Sub    string
	Role   string
	Claims map[string]any
}

// Tenant is the tenant's support-access state.
type Tenant struct {
	ID                  string
	SupportAccess       bool
	AllowNonAdminGrants bool
}

// GrantRequest is everything a grant decision depends on.
type GrantRequest struct {
	Granter      Granter
	Tenant       Tenant
	Role         string
	Environments []string
	Resources    []string
	TTL          time.Duration // 0: the policy default
	Ticket       string
	Tick         Ticket // system and severity of Ticket, if known
	Now          time.Time
}

// Actions, request.action in rules: what is being decided.
const (
	ActionToggle = "toggle" // a tenant admin turns support access on (or changes it while on)
	ActionGrant  = "grant"  // a customer user gives access
	ActionRedeem = "redeem" // an engineer redeems, refreshes, or a token is introspected
)

// ToggleRequest is a tenant admin turning support access on, or changing
// allow_non_admin_grants while it is on. Turning it off is never a policy
// question: ending access must always work.
type ToggleRequest struct {
	Granter Granter
	Tenant  Tenant // the state asked for
	Now     time.Time
}

// DecideToggle runs the rules with request.action "toggle" (request.role
// and the other grant fields empty, engineer empty).
func (p *Policy) DecideToggle(r ToggleRequest) error {
	var trail []string
	return p.evalRules(ruleInput{
		granter:  map[string]any{"sub": r.Granter.Sub, "role": r.Granter.Role, "claims": claimsOrEmpty(r.Granter.Claims)},
		request:  requestVars(ActionToggle, "", nil, nil, 0, "", Ticket{}),
		tenant:   tenantVars(r.Tenant),
		engineer: map[string]any{},
		now:      r.Now,
	}, &trail)
}

// Ticket is the system and severity of a grant's ticket.
type Ticket struct {
	System   string
	Severity string // S1..S4 or ""
}

// GrantDecision is an allowed grant, normalised.
type GrantDecision struct {
	Role         string
	Scopes       []string
	Environments []string
	Resources    []string
	TTL          time.Duration
	ExpiresAt    time.Time
	// Trail lists every ceiling and rule consulted, in order.
	Trail []string
}

// Limits on request fields.
const (
	MaxEnvironments = 16
	MaxResources    = 64
	MaxTicketLen    = 128
)

var resourceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$`)

// DecideGrant decides whether r.Granter may create the grant r describes.
// It returns *Denied (the requester may not) or *Invalid (the request is
// malformed for this policy) on refusal.
func (p *Policy) DecideGrant(r GrantRequest) (GrantDecision, error) {
	var trail []string
	d, err := p.decideGrant(r, &trail)
	d.Trail = trail
	return d, err
}

// decideGrant applies every ceiling in the order the trail reports them;
// one function keeps that order visible, so it is longer than most.
func (p *Policy) decideGrant(r GrantRequest, trail *[]string) (GrantDecision, error) {
	if !r.Tenant.SupportAccess {
		*trail = append(*trail, "tenant support access: off: deny")
		return GrantDecision{}, &Denied{Rule: "support-access", Reason: "support access is turned off for this tenant"}
	}
	*trail = append(*trail, "tenant support access: on")
	granterRank := p.rank(r.Granter.Role)
	if granterRank < 0 {
		*trail = append(*trail, fmt.Sprintf("granter role %q: not in policy: deny", r.Granter.Role))
		return GrantDecision{}, &Denied{Rule: "granter-role", Reason: fmt.Sprintf("your role %q is not a role this policy knows", r.Granter.Role)}
	}
	if p.IsGranter(r.Granter.Role) {
		*trail = append(*trail, fmt.Sprintf("granter role %q: in granter_roles", r.Granter.Role))
	} else if r.Tenant.AllowNonAdminGrants {
		*trail = append(*trail, fmt.Sprintf("granter role %q: not in granter_roles, tenant allows non-admin grants", r.Granter.Role))
	} else {
		*trail = append(*trail, fmt.Sprintf("granter role %q: not in granter_roles and tenant does not allow non-admin grants: deny", r.Granter.Role))
		return GrantDecision{}, &Denied{Rule: "granter-roles", Reason: "only tenant admins may grant support access in this tenant"}
	}
	roleRank := p.rank(r.Role)
	if roleRank < 0 {
		return GrantDecision{}, &Invalid{Field: "role", Reason: fmt.Sprintf("unknown role %q (roles: %s)", r.Role, p.roleNames())}
	}
	if roleRank > granterRank {
		*trail = append(*trail, fmt.Sprintf("role %q above granter's role %q: deny", r.Role, r.Granter.Role))
		return GrantDecision{}, &Denied{Rule: "granter-ceiling", Reason: fmt.Sprintf("you cannot grant %q: it is above your own role %q", r.Role, r.Granter.Role)}
	}
	*trail = append(*trail, fmt.Sprintf("role %q: within granter's role %q", r.Role, r.Granter.Role))

	if err := p.checkEnvironments(r.Environments); err != nil {
		return GrantDecision{}, err
	}
	if err := checkResources(r.Resources); err != nil {
		return GrantDecision{}, err
	}
	if len(r.Ticket) > MaxTicketLen {
		return GrantDecision{}, &Invalid{Field: "ticket", Reason: fmt.Sprintf("at most %d characters", MaxTicketLen)}
	}

	if r.Tick.Severity != "" && !IsSeverity(r.Tick.Severity) {
		return GrantDecision{}, &Invalid{Field: "ticket.severity", Reason: "severity must be S1, S2, S3 or S4"}
	}
	ttl, limit, limitBy := r.TTL, p.MaxTTL, "grants.max_ttl"
	if c, ok := p.SeverityMaxTTL[r.Tick.Severity]; ok && c < limit {
		limit, limitBy = c, "tickets.severity_max_ttl."+r.Tick.Severity
	}
	for _, name := range r.Environments {
		env := p.environments[name]
		if env.MaxTTL > 0 && env.MaxTTL < limit {
			limit, limitBy = env.MaxTTL, "environments."+name+".max_ttl"
		}
		if env.RequireTicket && r.Ticket == "" {
			*trail = append(*trail, fmt.Sprintf("environment %s requires a ticket: deny", name))
			return GrantDecision{}, &Invalid{Field: "ticket", Reason: fmt.Sprintf("environment %q requires a ticket reference", name)}
		}
	}
	switch {
	case ttl == 0:
		ttl = min(p.DefaultTTL, limit)
		*trail = append(*trail, fmt.Sprintf("expiry: default %s, capped by %s %s: %s", fd(p.DefaultTTL), limitBy, fd(limit), fd(ttl)))
	case ttl < 0:
		return GrantDecision{}, &Invalid{Field: "expires_in", Reason: "expiry must be in the future"}
	case ttl > limit:
		*trail = append(*trail, fmt.Sprintf("expiry %s above %s %s: deny", fd(ttl), limitBy, fd(limit)))
		return GrantDecision{}, &Invalid{Field: "expires_in", Reason: fmt.Sprintf("expiry %s is beyond the maximum %s set by %s", fd(ttl), fd(limit), limitBy)}
	default:
		*trail = append(*trail, fmt.Sprintf("expiry %s: within %s %s", fd(ttl), limitBy, fd(limit)))
	}

	in := ruleInput{
		granter:  map[string]any{"sub": r.Granter.Sub, "role": r.Granter.Role, "claims": claimsOrEmpty(r.Granter.Claims)},
		request:  requestVars(ActionGrant, r.Role, r.Environments, r.Resources, ttl, r.Ticket, r.Tick),
		tenant:   tenantVars(r.Tenant),
		engineer: map[string]any{},
		now:      r.Now,
	}
	if err := p.evalRules(in, trail); err != nil {
		return GrantDecision{}, err
	}
	return GrantDecision{
		Role:         r.Role,
		Scopes:       p.Scopes(r.Role),
		Environments: slices.Clone(r.Environments),
		Resources:    slices.Clone(r.Resources),
		TTL:          ttl,
		ExpiresAt:    r.Now.Add(ttl),
	}, nil
}

func (p *Policy) checkEnvironments(envs []string) error {
	if len(envs) == 0 {
		return &Invalid{Field: "environments", Reason: fmt.Sprintf("name at least one environment (%s)", p.envNames())}
	}
	if len(envs) > MaxEnvironments {
		return &Invalid{Field: "environments", Reason: fmt.Sprintf("at most %d environments", MaxEnvironments)}
	}
	seen := map[string]bool{}
	for _, e := range envs {
		if _, ok := p.environments[e]; !ok {
			return &Invalid{Field: "environments", Reason: fmt.Sprintf("unknown environment %q (environments: %s)", e, p.envNames())}
		}
		if seen[e] {
			return &Invalid{Field: "environments", Reason: fmt.Sprintf("environment %q listed twice", e)}
		}
		seen[e] = true
	}
	return nil
}

func checkResources(res []string) error {
	if len(res) > MaxResources {
		return &Invalid{Field: "resources", Reason: fmt.Sprintf("at most %d resources", MaxResources)}
	}
	seen := map[string]bool{}
	for _, r := range res {
		if !resourceRE.MatchString(r) {
			return &Invalid{Field: "resources", Reason: fmt.Sprintf("resource %q: use letters, digits and . _ : / @ -, at most 128 characters", r)}
		}
		if seen[r] {
			return &Invalid{Field: "resources", Reason: fmt.Sprintf("resource %q listed twice", r)}
		}
		seen[r] = true
	}
	return nil
}

// Engineer is the support engineer redeeming a code, from the verified ID
// token of the support IdP.
type Engineer struct {
	Sub    string
	Iss    string
	Email  string
	Groups []string
	MFA    bool
	Claims map[string]any
}

// IssuedGrant is what was granted, as stored.
type IssuedGrant struct {
	Tenant       Tenant
	Granter      Granter
	Role         string
	Environments []string
	Resources    []string
	Ticket       string
	Tick         Ticket
	CreatedAt    time.Time
	ExpiresAt    time.Time
}

// RedeemDecision is the effective access of a redeemed grant.
type RedeemDecision struct {
	Role   string
	Scopes []string
	Trail  []string
}

// DecideRedeem decides whether e may redeem g, and with which role: the
// grant's role capped by the most restrictive tier the engineer is in.
func (p *Policy) DecideRedeem(e Engineer, g IssuedGrant, now time.Time) (RedeemDecision, error) {
	var trail []string
	d, err := p.decideRedeem(e, g, now, &trail)
	d.Trail = trail
	return d, err
}

// CheckEngineer decides what depends on the engineer alone (required
// groups, MFA), so that an engineer the policy refuses is refused before
// any code is looked at: no oracle on codes, no failures counted.
func (p *Policy) CheckEngineer(e Engineer) error {
	return p.checkEngineer(e, new([]string))
}

func (p *Policy) checkEngineer(e Engineer, trail *[]string) error {
	for _, want := range p.Engineers.RequireGroups {
		if !slices.Contains(e.Groups, want) {
			*trail = append(*trail, fmt.Sprintf("engineer not in required group %q: deny", want))
			return &Denied{Rule: "engineers.require_groups", Reason: fmt.Sprintf("the engineer is not in the required group %q", want)}
		}
	}
	if p.Engineers.RequireMFA && !e.MFA {
		*trail = append(*trail, "engineer signed in without MFA: deny")
		return &Denied{Rule: "engineers.require_mfa", Reason: "the engineer must sign in with multi-factor authentication"}
	}
	return nil
}

func (p *Policy) decideRedeem(e Engineer, g IssuedGrant, now time.Time, trail *[]string) (RedeemDecision, error) {
	if err := p.checkEngineer(e, trail); err != nil {
		return RedeemDecision{}, err
	}
	role, err := p.GrantStillFits(g, now, trail)
	if err != nil {
		return RedeemDecision{}, err
	}
	role = p.capByTier(role, e.Groups, trail)
	in := ruleInput{
		granter: map[string]any{"sub": g.Granter.Sub, "role": g.Granter.Role, "claims": claimsOrEmpty(g.Granter.Claims)},
		request: requestVars(ActionRedeem, g.Role, g.Environments, g.Resources, g.ExpiresAt.Sub(g.CreatedAt), g.Ticket, g.Tick),
		tenant:  tenantVars(g.Tenant),
		engineer: map[string]any{
			"sub": e.Sub, "iss": e.Iss, "groups": stringsAny(e.Groups), "claims": claimsOrEmpty(e.Claims),
		},
		now: now,
	}
	if err := p.evalRules(in, trail); err != nil {
		return RedeemDecision{}, err
	}
	return RedeemDecision{Role: role, Scopes: p.Scopes(role)}, nil
}

// StillAllows re-decides a live token against this policy: the redemption
// decision for the same engineer and grant, now, must still allow at least
// the token's role. Tightening a policy turns tokens that no longer fit
// inactive; loosening it never widens them, because the token's own role
// and scopes stay the upper bound.
func (p *Policy) StillAllows(e Engineer, g IssuedGrant, tokenRole string, now time.Time) error {
	d, err := p.DecideRedeem(e, g, now)
	if err != nil {
		return err
	}
	if !p.RoleAtMost(tokenRole, d.Role) {
		return &Denied{Rule: "engineers.tiers", Reason: fmt.Sprintf("the engineer may now act at most as %q", d.Role)}
	}
	return nil
}

// GrantStillFits re-checks a stored grant against this policy: its role and
// environments still exist, and its expiry is within today's limits. It
// returns the grant's role. Loosening a policy never widens a grant; this
// only narrows.
func (p *Policy) GrantStillFits(g IssuedGrant, now time.Time, trail *[]string) (string, error) {
	if !p.HasRole(g.Role) {
		*trail = append(*trail, fmt.Sprintf("role %q no longer in policy: deny", g.Role))
		return "", &Denied{Rule: "roles", Reason: fmt.Sprintf("role %q is no longer defined", g.Role)}
	}
	if p.rank(g.Role) > p.rank(g.Granter.Role) {
		*trail = append(*trail, fmt.Sprintf("role %q above granter's role %q: deny", g.Role, g.Granter.Role))
		return "", &Denied{Rule: "granter-ceiling", Reason: "the grant is above its granter's role"}
	}
	limit, limitBy := p.MaxTTL, "grants.max_ttl"
	if c, ok := p.SeverityMaxTTL[g.Tick.Severity]; ok && c < limit {
		limit, limitBy = c, "tickets.severity_max_ttl."+g.Tick.Severity
	}
	for _, name := range g.Environments {
		env, ok := p.environments[name]
		if !ok {
			*trail = append(*trail, fmt.Sprintf("environment %q no longer in policy: deny", name))
			return "", &Denied{Rule: "environments", Reason: fmt.Sprintf("environment %q is no longer defined", name)}
		}
		if env.MaxTTL > 0 && env.MaxTTL < limit {
			limit, limitBy = env.MaxTTL, "environments."+name+".max_ttl"
		}
		if env.RequireTicket && g.Ticket == "" {
			*trail = append(*trail, fmt.Sprintf("environment %s now requires a ticket: deny", name))
			return "", &Denied{Rule: "environments." + name + ".require_ticket", Reason: fmt.Sprintf("environment %q requires a ticket reference", name)}
		}
	}
	if ttl := g.ExpiresAt.Sub(g.CreatedAt); ttl > limit {
		*trail = append(*trail, fmt.Sprintf("grant lifetime %s above %s %s: deny", fd(ttl), limitBy, fd(limit)))
		return "", &Denied{Rule: limitBy, Reason: fmt.Sprintf("the grant's lifetime %s is beyond the maximum %s", fd(ttl), fd(limit))}
	}
	return g.Role, nil
}

// capByTier lowers role to the most restrictive max_role among the tiers
// whose groups the engineer is in.
func (p *Policy) capByTier(role string, groups []string, trail *[]string) string {
	for _, t := range p.Engineers.Tiers {
		in := false
		for _, g := range t.Groups {
			if slices.Contains(groups, g) {
				in = true
				break
			}
		}
		if in && p.rank(t.MaxRole) < p.rank(role) {
			*trail = append(*trail, fmt.Sprintf("engineer tier %v caps role %q to %q", t.Groups, role, t.MaxRole))
			role = t.MaxRole
		}
	}
	return role
}

// KnowsRole says whether role is one of the policy's roles.
func (p *Policy) KnowsRole(role string) bool { return p.rank(role) >= 0 }

// RoleAtMost reports whether role a ranks at or below role b.
func (p *Policy) RoleAtMost(a, b string) bool {
	ra, rb := p.rank(a), p.rank(b)
	return ra >= 0 && rb >= 0 && ra <= rb
}

func (p *Policy) roleNames() string {
	names := make([]string, len(p.roles))
	for i, r := range p.roles {
		names[i] = r.Name
	}
	return fmt.Sprint(names)
}

func (p *Policy) envNames() string { return fmt.Sprint(p.EnvironmentNames()) }

func requestVars(action, role string, envs, res []string, ttl time.Duration, ticket string, tick Ticket) map[string]any {
	return map[string]any{
		"action":          action,
		"role":            role,
		"environments":    stringsAny(envs),
		"resources":       stringsAny(res),
		"ttl":             int64(ttl / time.Second),
		"ticket":          ticket,
		"ticket_system":   tick.System,
		"ticket_severity": tick.Severity,
	}
}

func tenantVars(t Tenant) map[string]any {
	return map[string]any{"id": t.ID, "support_access": t.SupportAccess, "allow_non_admin_grants": t.AllowNonAdminGrants}
}

func stringsAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func claimsOrEmpty(c map[string]any) map[string]any {
	if c == nil {
		return map[string]any{}
	}
	return c
}
