package core

import (
	"strings"
	"testing"
	"time"
)

func TestSortableIDsSortByTime(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	var prev string
	seen := map[string]bool{}
	// Steps of a prime number of milliseconds cross every value of the
	// low characters, and a year's steps the high ones.
	for i := range 20000 {
		d := time.Duration(i) * 977 * time.Millisecond
		if i >= 10000 {
			d = 10000*977*time.Millisecond + time.Duration(i-10000)*24*time.Hour
		}
		for range 2 {
			id := sortableID(t0.Add(d), 12)
			if len(id) != 24 || strings.Trim(id, "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz") != "" {
				t.Fatalf("%q: want 24 base64url characters", id)
			}
			if seen[id] {
				t.Fatalf("%q made twice", id)
			}
			seen[id] = true
			if prev != "" && id[:8] < prev[:8] {
				t.Fatalf("%q (at +%v) sorts before %q, made earlier", id, d, prev)
			}
			prev = id
		}
	}
	// The time prefix is the same within a millisecond, and the rest is random.
	a, b := sortableID(t0, 12), sortableID(t0, 12)
	if a[:8] != b[:8] || a[8:] == b[8:] {
		t.Fatalf("same millisecond: %q and %q", a, b)
	}
	if sortableID(t0, 12) > sortableID(t0.Add(time.Millisecond), 12)[:8]+"~" {
		t.Fatal("a later millisecond sorts first")
	}
}
