package policy

import (
	"fmt"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
)

// rule is a compiled deny rule.
type rule struct {
	name    string
	message string
	source  string
	prg     cel.Program
}

// ruleCostLimit bounds the work one rule may do per evaluation, so a hostile
// or careless expression cannot stall decisions.
const ruleCostLimit = 100_000

func ruleEnv() (*cel.Env, error) {
	dyn := cel.MapType(cel.StringType, cel.DynType)
	return cel.NewEnv(
		cel.Variable("granter", dyn),
		cel.Variable("request", dyn),
		cel.Variable("tenant", dyn),
		cel.Variable("engineer", dyn),
		cel.Variable("now", cel.TimestampType),
	)
}

func compileRule(r ruleSpec) (*rule, error) {
	env, err := ruleEnv()
	if err != nil {
		return nil, fmt.Errorf("internal: building CEL environment: %v", err)
	}
	ast, iss := env.Compile(r.DenyIf)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("deny_if does not compile: %v", iss.Err())
	}
	if ast.OutputType() != cel.BoolType {
		return nil, fmt.Errorf("deny_if must be a boolean expression, it is %s", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(ruleCostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("deny_if cannot be planned: %v", err)
	}
	return &rule{name: r.Name, message: r.Message, source: r.DenyIf, prg: prg}, nil
}

// ruleInput is what rule expressions see.
type ruleInput struct {
	granter  map[string]any
	request  map[string]any
	tenant   map[string]any
	engineer map[string]any // empty at grant time: use has(engineer.sub)
	now      time.Time
}

// evalRules returns the first rule that denies. A rule that cannot be
// evaluated denies too (default deny), naming itself.
func (p *Policy) evalRules(in ruleInput, trail *[]string) error {
	if len(p.rules) == 0 {
		return nil
	}
	vars := map[string]any{
		"granter":  in.granter,
		"request":  in.request,
		"tenant":   in.tenant,
		"engineer": in.engineer,
		"now":      in.now,
	}
	for _, r := range p.rules {
		out, _, err := r.prg.Eval(vars)
		if err != nil {
			*trail = append(*trail, fmt.Sprintf("rule %s: evaluation failed (%v): deny", r.name, err))
			return &Denied{Rule: r.name, Reason: fmt.Sprintf("policy rule %q could not be evaluated, so access is denied", r.name)}
		}
		if out == types.True {
			*trail = append(*trail, fmt.Sprintf("rule %s: matched: deny", r.name))
			return &Denied{Rule: r.name, Reason: r.message}
		}
		if out != types.False {
			*trail = append(*trail, fmt.Sprintf("rule %s: returned %v, not a boolean: deny", r.name, out))
			return &Denied{Rule: r.name, Reason: fmt.Sprintf("policy rule %q did not return a boolean, so access is denied", r.name)}
		}
		*trail = append(*trail, fmt.Sprintf("rule %s: no match", r.name))
	}
	return nil
}
