package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/actas/actas/internal/strictyaml"
)

// MaxFileSize bounds a policy file; larger files are refused unread.
const MaxFileSize = 1 << 20

// file is the YAML shape of policy.yaml.
type file struct {
	Version          int                `yaml:"version"`
	Roles            []roleSpec         `yaml:"roles"`
	NeverGrantScopes []string           `yaml:"never_grant_scopes"`
	Grants           grantsSpec         `yaml:"grants"`
	Environments     map[string]envSpec `yaml:"environments"`
	Engineers        engineersSpec      `yaml:"engineers"`
	Tokens           tokensSpec         `yaml:"tokens"`
	Tickets          ticketsSpec        `yaml:"tickets"`
	Rules            []ruleSpec         `yaml:"rules"`
	Approval         []approvalSpec     `yaml:"approval"`
}

type ticketsSpec struct {
	SeverityMaxTTL map[string]*strictyaml.Duration `yaml:"severity_max_ttl"`
}

type roleSpec struct {
	Name   string   `yaml:"name"`
	Scopes []string `yaml:"scopes"`
}

type grantsSpec struct {
	DefaultTTL   *strictyaml.Duration `yaml:"default_ttl"`
	MaxTTL       *strictyaml.Duration `yaml:"max_ttl"`
	GranterRoles []string             `yaml:"granter_roles"`
	Code         codeSpec             `yaml:"code"`
	OnDemotion   string               `yaml:"on_granter_demotion"`
}

type codeSpec struct {
	Length       *int                 `yaml:"length"`
	RedeemWithin *strictyaml.Duration `yaml:"redeem_within"`
	MaxFailures  *int                 `yaml:"max_failures"`
}

type envSpec struct {
	MaxTTL        *strictyaml.Duration `yaml:"max_ttl"`
	RequireTicket bool                 `yaml:"require_ticket"`
}

type engineersSpec struct {
	RequireGroups []string   `yaml:"require_groups"`
	RequireMFA    bool       `yaml:"require_mfa"`
	Tiers         []tierSpec `yaml:"tiers"`
}

type tierSpec struct {
	Groups  []string `yaml:"groups"`
	MaxRole string   `yaml:"max_role"`
}

type tokensSpec struct {
	AccessTTL  *strictyaml.Duration `yaml:"access_ttl"`
	RefreshTTL *strictyaml.Duration `yaml:"refresh_ttl"`
}

type ruleSpec struct {
	Name    string `yaml:"name"`
	DenyIf  string `yaml:"deny_if"`
	Message string `yaml:"message"`
}

// Policy is a parsed, validated, immutable policy. Share it freely between
// goroutines; a reload builds a new one.
type Policy struct {
	roles        []Role
	roleRank     map[string]int
	neverGrant   map[string]bool
	DefaultTTL   time.Duration
	MaxTTL       time.Duration
	granterRoles map[string]bool
	// EndOnDemotion: when the directory (or a fresh token) shows a
	// granter's role lowered, end their grants above the new role instead
	// of capping them to it.
	EndOnDemotion bool
	Code          CodeSettings
	environments  map[string]Environment
	Engineers     EngineerRules
	AccessTTL     time.Duration
	RefreshTTL    time.Duration
	rules         []*rule
	approvals     []*approvalRule
	// SeverityMaxTTL caps a ticket-bound grant's lifetime by the ticket's
	// severity (S1..S4).
	SeverityMaxTTL map[string]time.Duration
	// SHA256 is the hex sha256 of the file's bytes, recorded with every
	// decision so an audit reader knows which policy was in force.
	SHA256 string
}

// Role is a named access level; roles are ordered lowest first.
type Role struct {
	Name   string
	Scopes []string
}

// CodeSettings governs support codes.
type CodeSettings struct {
	Length       int
	RedeemWithin time.Duration
	MaxFailures  int
}

// Environment is the per-environment limits.
type Environment struct {
	Name          string
	MaxTTL        time.Duration // 0: the global maximum
	RequireTicket bool
}

// EngineerRules constrain who may redeem.
type EngineerRules struct {
	RequireGroups []string
	RequireMFA    bool
	Tiers         []Tier
}

// Tier caps the role of engineers in any of Groups.
type Tier struct {
	Groups  []string
	MaxRole string
}

// Defaults that apply when the file leaves a key out.
const (
	defaultCodeLength  = 6
	defaultMaxFailures = 10
	defaultAccessTTL   = 15 * time.Minute
	defaultRefreshTTL  = 12 * time.Hour
	defaultRedeem      = 24 * time.Hour
	defaultDefaultTTL  = 24 * time.Hour
	defaultMaxTTL      = 180 * 24 * time.Hour
)

// Error is every problem found in a policy file.
type Error struct {
	File     string
	Problems []Problem
}

// Problem is one defect with its position (Line 0 when it has none).
type Problem struct {
	Line, Column int
	Msg          string
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = fmt.Sprintf("%s:%d:%d: %s", e.File, p.Line, p.Column, p.Msg)
	}
	return strings.Join(lines, "\n")
}

// Load reads and parses a policy file.
func Load(path string) (*Policy, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// ReadFile reads a policy file of at most MaxFileSize bytes.
func ReadFile(path string) ([]byte, error) {
	data, err := strictyaml.ReadFile(path, MaxFileSize)
	var tl *strictyaml.TooLargeError
	if errors.As(err, &tl) {
		return nil, &Error{File: path, Problems: []Problem{{Line: 1, Column: 1, Msg: fmt.Sprintf("file is %d bytes; the limit is %d", tl.Size, MaxFileSize)}}}
	}
	return data, err
}

var (
	nameRE  = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	scopeRE = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]{1,128}$`) // RFC 6749 §3.3 scope-token
)

// Parse parses policy bytes; name is used in messages.
func Parse(name string, data []byte) (*Policy, error) {
	if len(data) > MaxFileSize {
		return nil, &Error{File: name, Problems: []Problem{{Line: 1, Column: 1, Msg: fmt.Sprintf("file is %d bytes; the limit is %d", len(data), MaxFileSize)}}}
	}
	var f file
	root, err := strictyaml.Decode(data, &f)
	var decodeProbs []Problem
	if err != nil {
		var probs strictyaml.Problems
		if !errors.As(err, &probs) {
			return nil, &Error{File: name, Problems: []Problem{{Msg: err.Error()}}}
		}
		for _, p := range probs {
			decodeProbs = append(decodeProbs, Problem{p.Line, p.Column, p.Msg})
		}
		if root == nil { // not even decodable: nothing more to check
			return nil, &Error{File: name, Problems: decodeProbs}
		}
	}
	// What decoded is checked too, so that one run reports every problem.
	b := builder{root: root}
	p := b.build(&f)
	// A check that fails on a line the decode already reported is its
	// consequence ("roles must list a role" after roles failed to decode).
	all := decodeProbs
	for _, bp := range b.probs {
		if !slices.ContainsFunc(decodeProbs, func(d Problem) bool { return d.Line == bp.Line }) {
			all = append(all, bp)
		}
	}
	if len(all) > 0 {
		sort.SliceStable(all, func(i, j int) bool {
			return all[i].Line < all[j].Line || all[i].Line == all[j].Line && all[i].Column < all[j].Column
		})
		return nil, &Error{File: name, Problems: all}
	}
	sum := sha256.Sum256(data)
	p.SHA256 = hex.EncodeToString(sum[:])
	return p, nil
}

type builder struct {
	root  *yaml.Node
	probs []Problem
}

// at finds the node for a path of mapping keys and sequence indexes; it
// returns the deepest node it reached so a message is never without a line.
func (b *builder) at(path ...any) *yaml.Node {
	n := b.root
	for _, step := range path {
		switch s := step.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return n
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == s {
					n, found = n.Content[i+1], true
					break
				}
			}
			if !found {
				return n
			}
		case int:
			if n.Kind != yaml.SequenceNode || s >= len(n.Content) {
				return n
			}
			n = n.Content[s]
		}
	}
	return n
}

func (b *builder) fail(path []any, format string, args ...any) {
	n := b.at(path...)
	b.probs = append(b.probs, Problem{n.Line, n.Column, fmt.Sprintf(format, args...)})
}

func p(path ...any) []any { return path }

func (b *builder) duration(d *strictyaml.Duration, def time.Duration, path []any) time.Duration {
	if d == nil {
		return def
	}
	if d.Std() <= 0 {
		b.fail(path, "%s must be greater than zero", path[len(path)-1])
		return def
	}
	return d.Std()
}

func (b *builder) build(f *file) *Policy {
	pol := &Policy{
		roleRank:     map[string]int{},
		neverGrant:   map[string]bool{},
		granterRoles: map[string]bool{},
		environments: map[string]Environment{},
	}
	b.roles(f, pol)
	b.grants(f, pol)
	b.environments(f, pol)
	b.engineers(f, pol)
	b.tokens(f, pol)
	b.tickets(f, pol)
	b.rules(f, pol)
	b.approvals(f, pol)
	return pol
}

// roles checks the version, the roles (lowest first) and never-grant scopes.
func (b *builder) roles(f *file, pol *Policy) {
	if f.Version != 1 {
		b.fail(p("version"), "version must be 1, got %d", f.Version)
	}
	if len(f.Roles) == 0 {
		b.fail(p("roles"), "roles must list at least one role")
	}
	for i, r := range f.Roles {
		if !nameRE.MatchString(r.Name) {
			b.fail(p("roles", i, "name"), "role name %q must be lowercase letters, digits, - or _", r.Name)
			continue
		}
		if _, dup := pol.roleRank[r.Name]; dup {
			b.fail(p("roles", i, "name"), "role %q is defined twice", r.Name)
			continue
		}
		for j, s := range r.Scopes {
			if !scopeRE.MatchString(s) {
				b.fail(p("roles", i, "scopes", j), "scope %q is not a valid OAuth scope token", s)
			}
		}
		pol.roleRank[r.Name] = len(pol.roles)
		pol.roles = append(pol.roles, Role{Name: r.Name, Scopes: slices.Clone(r.Scopes)})
	}
	for i, s := range f.NeverGrantScopes {
		if !scopeRE.MatchString(s) {
			b.fail(p("never_grant_scopes", i), "scope %q is not a valid OAuth scope token", s)
		}
		pol.neverGrant[s] = true
	}
}

// grants checks grant lifetimes, granter roles and the support code settings.
func (b *builder) grants(f *file, pol *Policy) {
	pol.DefaultTTL = b.duration(f.Grants.DefaultTTL, defaultDefaultTTL, p("grants", "default_ttl"))
	pol.MaxTTL = b.duration(f.Grants.MaxTTL, defaultMaxTTL, p("grants", "max_ttl"))
	if pol.DefaultTTL > pol.MaxTTL {
		b.fail(p("grants", "default_ttl"), "default_ttl %s is above max_ttl %s", fd(pol.DefaultTTL), fd(pol.MaxTTL))
	}
	if len(f.Grants.GranterRoles) == 0 {
		b.fail(p("grants"), "grants.granter_roles must name at least one role (the tenant admins)")
	}
	for i, r := range f.Grants.GranterRoles {
		if _, ok := pol.roleRank[r]; !ok {
			b.fail(p("grants", "granter_roles", i), "granter role %q is not defined in roles", r)
		}
		pol.granterRoles[r] = true
	}
	switch f.Grants.OnDemotion {
	case "", "cap":
	case "end":
		pol.EndOnDemotion = true
	default:
		b.fail(p("grants", "on_granter_demotion"), "on_granter_demotion must be cap or end, got %q", f.Grants.OnDemotion)
	}
	pol.Code = CodeSettings{Length: defaultCodeLength, MaxFailures: defaultMaxFailures}
	if l := f.Grants.Code.Length; l != nil {
		if *l < 6 || *l > 12 {
			b.fail(p("grants", "code", "length"), "code length must be between 6 and 12 digits, got %d", *l)
		}
		pol.Code.Length = *l
	}
	if m := f.Grants.Code.MaxFailures; m != nil {
		if *m < 1 || *m > 1000 {
			b.fail(p("grants", "code", "max_failures"), "max_failures must be between 1 and 1000, got %d", *m)
		}
		pol.Code.MaxFailures = *m
	}
	pol.Code.RedeemWithin = b.duration(f.Grants.Code.RedeemWithin, defaultRedeem, p("grants", "code", "redeem_within"))
}

// environments checks the environments and their caps.
func (b *builder) environments(f *file, pol *Policy) {
	if len(f.Environments) == 0 {
		b.fail(p("environments"), "environments must list at least one environment")
	}
	for name, e := range f.Environments {
		if !nameRE.MatchString(name) {
			b.fail(p("environments", name), "environment name %q must be lowercase letters, digits, - or _", name)
		}
		env := Environment{Name: name, RequireTicket: e.RequireTicket}
		env.MaxTTL = b.duration(e.MaxTTL, 0, p("environments", name, "max_ttl"))
		if env.MaxTTL > pol.MaxTTL {
			b.fail(p("environments", name, "max_ttl"), "environment %q max_ttl %s is above the global grants.max_ttl %s", name, fd(env.MaxTTL), fd(pol.MaxTTL))
		}
		pol.environments[name] = env
	}
}

// engineers checks what engineers must have, and the tiers.
func (b *builder) engineers(f *file, pol *Policy) {
	pol.Engineers = EngineerRules{
		RequireGroups: slices.Clone(f.Engineers.RequireGroups),
		RequireMFA:    f.Engineers.RequireMFA,
	}
	for i, t := range f.Engineers.Tiers {
		if len(t.Groups) == 0 {
			b.fail(p("engineers", "tiers", i), "a tier must name at least one group")
		}
		if _, ok := pol.roleRank[t.MaxRole]; !ok {
			b.fail(p("engineers", "tiers", i, "max_role"), "tier max_role %q is not defined in roles", t.MaxRole)
		}
		pol.Engineers.Tiers = append(pol.Engineers.Tiers, Tier{Groups: slices.Clone(t.Groups), MaxRole: t.MaxRole})
	}
}

// tokens checks token lifetimes.
func (b *builder) tokens(f *file, pol *Policy) {
	pol.AccessTTL = b.duration(f.Tokens.AccessTTL, defaultAccessTTL, p("tokens", "access_ttl"))
	pol.RefreshTTL = b.duration(f.Tokens.RefreshTTL, defaultRefreshTTL, p("tokens", "refresh_ttl"))
	if pol.AccessTTL > 24*time.Hour {
		b.fail(p("tokens", "access_ttl"), "access_ttl %s is above 24h; access tokens are meant to be short-lived", fd(pol.AccessTTL))
	}
	if pol.RefreshTTL < pol.AccessTTL {
		b.fail(p("tokens", "refresh_ttl"), "refresh_ttl %s is below access_ttl %s", fd(pol.RefreshTTL), fd(pol.AccessTTL))
	}
}

// tickets checks per-severity caps.
func (b *builder) tickets(f *file, pol *Policy) {
	pol.SeverityMaxTTL = map[string]time.Duration{}
	for sev, d := range f.Tickets.SeverityMaxTTL {
		if !IsSeverity(sev) {
			b.fail(p("tickets", "severity_max_ttl", sev), "unknown severity %q (S1, S2, S3, S4)", sev)
			continue
		}
		v := b.duration(d, 0, p("tickets", "severity_max_ttl", sev))
		if v > pol.MaxTTL {
			b.fail(p("tickets", "severity_max_ttl", sev), "severity %s max_ttl %s is above the global grants.max_ttl %s", sev, fd(v), fd(pol.MaxTTL))
		}
		pol.SeverityMaxTTL[sev] = v
	}
}

// rules compiles the CEL deny rules.
func (b *builder) rules(f *file, pol *Policy) {
	seen := map[string]bool{}
	for i, r := range f.Rules {
		if !nameRE.MatchString(r.Name) {
			b.fail(p("rules", i, "name"), "rule name %q must be lowercase letters, digits, - or _", r.Name)
		} else if seen[r.Name] {
			b.fail(p("rules", i, "name"), "rule %q is defined twice", r.Name)
		}
		seen[r.Name] = true
		if strings.TrimSpace(r.Message) == "" {
			b.fail(p("rules", i), "rule %q needs a message (it is shown to the user it denies)", r.Name)
		}
		if strings.TrimSpace(r.DenyIf) == "" {
			b.fail(p("rules", i), "rule %q needs deny_if", r.Name)
			continue
		}
		compiled, err := compileRule(r)
		if err != nil {
			b.fail(p("rules", i, "deny_if"), "rule %q: %v", r.Name, err)
			continue
		}
		pol.rules = append(pol.rules, compiled)
	}
}

// fd formats a duration the way the policy file writes it.
var fd = strictyaml.FormatDuration

// IsSeverity reports whether s is a ticket severity, S1 (highest) to S4.
func IsSeverity(s string) bool { return s == "S1" || s == "S2" || s == "S3" || s == "S4" }

// Roles returns the roles, lowest first.
func (p *Policy) Roles() []Role { return slices.Clone(p.roles) }

// HasRole reports whether name is a defined role.
func (p *Policy) HasRole(name string) bool { _, ok := p.roleRank[name]; return ok }

// IsGranter reports whether role may always grant and administer a tenant.
func (p *Policy) IsGranter(role string) bool { return p.granterRoles[role] }

// Environment returns the named environment.
func (p *Policy) Environment(name string) (Environment, bool) {
	e, ok := p.environments[name]
	return e, ok
}

// EnvironmentNames returns the environment names, sorted.
func (p *Policy) EnvironmentNames() []string {
	names := make([]string, 0, len(p.environments))
	for n := range p.environments {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Scopes returns the scopes of role minus the never-grant scopes, in the
// order the role lists them.
func (p *Policy) Scopes(role string) []string {
	i, ok := p.roleRank[role]
	if !ok {
		return nil
	}
	var out []string
	for _, s := range p.roles[i].Scopes {
		if !p.neverGrant[s] {
			out = append(out, s)
		}
	}
	return out
}

// NeverGrant reports whether scope is stripped from every token.
func (p *Policy) NeverGrant(scope string) bool { return p.neverGrant[scope] }

// RuleCount is the number of deny rules.
func (p *Policy) RuleCount() int { return len(p.rules) }

// rank orders roles; unknown roles rank -1.
func (p *Policy) rank(role string) int {
	if i, ok := p.roleRank[role]; ok {
		return i
	}
	return -1
}

// RolesAbove lists the roles ranked above role, lowest first; every role
// when the policy does not know role.
func (p *Policy) RolesAbove(role string) []string {
	r := p.rank(role)
	var out []string
	for i, ro := range p.roles {
		if i > r {
			out = append(out, ro.Name)
		}
	}
	return out
}
