package engineer

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestCheckBroker(t *testing.T) {
	for in, want := range map[string]string{
		"https://actas.example/":   "https://actas.example",
		"http://127.0.0.1:8080":    "http://127.0.0.1:8080",
		"http://localhost:8080///": "http://localhost:8080",
	} {
		if got, err := CheckBroker(in); err != nil || got != want {
			t.Errorf("%s: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "http://actas.example", "ftp://x", "https://a.example?x=1", "https://u:p@a.example", "actas.example"} {
		var e *Error
		if _, err := CheckBroker(bad); !errors.As(err, &e) || e.Code != ExitUsage {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
}

func TestPathPerBroker(t *testing.T) {
	a, b := Path("/d", "https://actas.example"), Path("/d", "https://actas.example:8443")
	if a == b || !strings.HasPrefix(a, "/d/actas.example-") || !strings.HasSuffix(a, ".json") {
		t.Fatalf("paths %s %s", a, b)
	}
}

func TestCacheRoundTripAndPermissions(t *testing.T) {
	dir := t.TempDir()
	broker := "https://actas.example"
	if _, err := load(dir, broker); !errors.Is(err, errNotSignedIn) {
		t.Fatalf("missing cache: %v", err)
	}
	c, err := newCache(Path(dir, broker), broker)
	if err != nil {
		t.Fatal(err)
	}
	c.Grants = []Grant{{ID: "g1", Tenant: "acme"}, {ID: "g2", Tenant: "beta"}, {ID: "g3", Tenant: "beta"}}
	if err := c.save(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(c.path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	got, err := load(dir, broker)
	if err != nil || got.key.Thumbprint() != c.key.Thumbprint() || len(got.Grants) != 3 {
		t.Fatalf("load: %v", err)
	}
	if g, err := got.grant("", "acme"); err != nil || g.ID != "g1" {
		t.Fatalf("by tenant: %v", err)
	}
	if _, err := got.grant("", "beta"); err == nil || !strings.Contains(err.Error(), "choose one with --grant") {
		t.Fatalf("ambiguous: %v", err)
	}
	if _, err := got.grant("", ""); err == nil {
		t.Fatal("three grants and no choice must be an error")
	}
	if g, err := got.grant("g3", ""); err != nil || g.Tenant != "beta" {
		t.Fatalf("by id: %v", err)
	}
	os.Chmod(c.path, 0o644)
	if _, err := load(dir, broker); err == nil || !strings.Contains(err.Error(), "accessible to other users") {
		t.Fatalf("a readable cache must be refused: %v", err)
	}
	os.Chmod(c.path, 0o600)
	if _, err := load(dir, "https://other.example"); !errors.Is(err, errNotSignedIn) {
		t.Fatalf("another broker's cache: %v", err)
	}
}
