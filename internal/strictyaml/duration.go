package strictyaml

import (
	"fmt"
	"math"
	"strconv"
	"strings"
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

// FormatDuration writes d in the syntax ParseDuration reads, largest
// units first ("5d", "1h30m", "90s"), so that messages echo durations the
// way a file's author writes them, not as Go's "120h0m0s".
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	if d < 0 {
		b.WriteByte('-')
		d = -d
	}
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.unit; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.unit
		}
	}
	if d > 0 || b.Len() == 0 {
		return time.Duration(d).String() // below a second: not in the file syntax
	}
	return b.String()
}

// String formats d as FormatDuration does.
func (d Duration) String() string { return FormatDuration(time.Duration(d)) }

// UnmarshalYAML implements yaml.Unmarshaler. Its errors are *yaml.TypeError
// so that decoding goes on and every problem of a file is reported at once.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return posTypeError(n, "a duration must be a string such as 24h or 5d")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return posTypeError(n, err.Error())
	}
	*d = Duration(v)
	return nil
}

// posTypeError is a positioned problem that yaml.v3 collects and goes on.
func posTypeError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d column %d: %s", n.Line, n.Column, msg)}}
}

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
