package strictyaml

import (
	"testing"
	"time"
)

// FuzzParseDuration: a duration parses to a non-negative value that
// formats back to one that parses to the same value, or is refused.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"90s", "1h30m", "180d", "0s", "5", "-1h", "1.5h", "99999999999999999999d", "1d1d", "h", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("%q parsed to a negative %s", s, d)
		}
		if d%time.Second != 0 {
			t.Fatalf("%q parsed to a fraction of a second: %s", s, d)
		}
	})
}
