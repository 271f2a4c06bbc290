package strictyaml

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a YAML duration written as one or more number+unit pairs with
// the units s, m, h and d ("90s", "1h30m", "180d"). A bare number, a negative
// value, a fraction and a value that overflows are errors.
type Duration time.Duration

// ParseDuration parses the Duration syntax.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	var total int64
	i := 0
	for i < len(s) {
		j := i
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i {
			return 0, fmt.Errorf("duration %q: expected a whole number at %q (units: s, m, h, d)", s, s[i:])
		}
		if j == len(s) {
			return 0, fmt.Errorf("duration %q: number without a unit (units: s, m, h, d)", s)
		}
		n, err := strconv.ParseInt(s[i:j], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("duration %q: number too large", s)
		}
		var unit int64
		switch s[j] {
		case 's':
			unit = int64(time.Second)
		case 'm':
			unit = int64(time.Minute)
		case 'h':
			unit = int64(time.Hour)
		case 'd':
			unit = 24 * int64(time.Hour)
		default:
			return 0, fmt.Errorf("duration %q: unknown unit %q (units: s, m, h, d)", s, s[j])
		}
		if n > math.MaxInt64/unit || total > math.MaxInt64-n*unit {
			return 0, fmt.Errorf("duration %q overflows", s)
		}
		total += n * unit
		i = j + 1
	}
	return time.Duration(total), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &PosError{n.Line, n.Column, "a duration must be a string such as 24h or 5d"}
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return &PosError{n.Line, n.Column, err.Error()}
	}
	*d = Duration(v)
	return nil
}

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// PosError is an error at a position, returned by custom unmarshalers.
type PosError struct {
	Line, Column int
	Msg          string
}

func (e *PosError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }
