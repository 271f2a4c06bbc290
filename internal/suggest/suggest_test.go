package suggest

import "testing"

func TestClosest(t *testing.T) {
	cands := []string{"serve", "demo", "migrate", "policy", "keys", "audit", "version", "rotate", "verify", "export"}
	for _, tc := range []struct{ in, want string }{
		{"serv", "serve"}, {"sevre", "serve"}, {"rotat", "rotate"}, {"verfy", "verify"}, {"polcy", "policy"},
		{"xyz", ""}, {"k", ""}, {"exprot", "export"},
	} {
		if got := Closest(tc.in, cands); got != tc.want {
			t.Errorf("Closest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
