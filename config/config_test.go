package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

const good = `issuer: https://actas.example
listen: 127.0.0.1:8080
storage: sqlite://actas.db
policy_file: policy.yaml
keys: {algorithm: ES256, rotate_every: 720h}
support_idp: {issuer: https://support-idp.example, client_id: actas, client_secret_env: SUP_SECRET}
customer_idps:
  - {issuer: https://customer-idp.example, audience: actas, tenant_claim: org_id, role_claim: role}
clients:
  - id: product-web
    secret_env: WEB_SECRET
    redirect_uris: [https://product.example/callback]
    audience: product
    can_introspect: true
    backchannel_logout_uri: https://product.example/bc-logout
`

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

var secrets = map[string]string{"SUP_SECRET": "x", "WEB_SECRET": "0123456789abcdef"}

func TestParse(t *testing.T) {
	c, err := Parse("actas.yaml", []byte(good), env(secrets))
	if err != nil {
		t.Fatal(err)
	}
	if c.Clients[0].Secret != "0123456789abcdef" || c.SupportIDP.GroupsClaim != "groups" || c.Keys.RotateEvery.Std().Hours() != 720 {
		t.Fatalf("parsed = %+v", c)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		env        map[string]string
		want       []string
	}{
		{"fail/unknown key names line and column", good + "extra_key: 1\n", secrets, []string{`actas.yaml:16:1: unknown key "extra_key"`}},
		{"fail/unknown nested key", strings.Replace(good, "algorithm: ES256", "algorithm: ES256, size: 4096", 1), secrets, []string{`actas.yaml:5:`, `unknown key "size"`}},
		{"fail/duplicate key", good + "listen: 127.0.0.1:9090\n", secrets, []string{`duplicate key "listen" (first at line 2)`}},
		{"fail/anchor and alias", strings.Replace(good, "listen: 127.0.0.1:8080", "listen: &l 127.0.0.1:8080", 1) + "secret_key_file: *l\n", secrets, []string{"anchors are not allowed (&l)", "aliases are not allowed"}},
		{"fail/every problem at once", `issuer: http://actas.example/
storage: mysql://x
keys: {algorithm: HS256}
support_idp: {issuer: ftp://x}
customer_idps: []
clients:
  - {id: a, can_introspect: true}
  - {id: a, audience: x, secret_env: MISSING}
`, nil, []string{"issuer: https is required", "storage: want sqlite://", "policy_file: required", "keys.algorithm: must be one of",
			"support_idp.issuer", "support_idp.client_id: required", "customer_idps: at least one", "clients[0].audience: required",
			"clients[0].can_introspect: introspection needs client authentication", `clients[1].id: duplicate client id "a"`,
			"clients[1].secret_env: environment variable MISSING"}},
		{"fail/postgres needs a root secret", strings.Replace(good, "sqlite://actas.db", "postgres://u:p@db:5432/actas", 1), secrets, []string{"PostgreSQL storage needs a shared root secret"}},
		{"fail/wrong type", strings.Replace(good, "can_introspect: true", "can_introspect: maybe", 1), secrets, []string{"cannot unmarshal"}},
		{"fail/bad duration", strings.Replace(good, "rotate_every: 720h", "rotate_every: 30", 1), secrets, []string{"number without a unit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("actas.yaml", []byte(tc.yaml), env(tc.env))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want *Error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	e := map[string]string{"SUP_SECRET": "x", "WEB_SECRET": "0123456789abcdef",
		"ACTAS_LISTEN":             "127.0.0.1:9999",
		"ACTAS_SUPPORT_IDP_ISSUER": "https://other-idp.example",
		"ACTAS_KEYS_ROTATE_EVERY":  "30d",
		"ACTAS_CLIENTS":            "[{id: cli, audience: product}]",
	}
	c, err := Parse("actas.yaml", []byte(good), env(e))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9999" || c.SupportIDP.Issuer != "https://other-idp.example" || c.Keys.RotateEvery.Std().Hours() != 720 ||
		len(c.Clients) != 1 || c.Clients[0].ID != "cli" {
		t.Fatalf("overrides not applied: %+v", c)
	}
	e["ACTAS_CLIENTS"] = "[{id: cli, bogus: 1}]"
	if _, err := Parse("actas.yaml", []byte(good), env(e)); err == nil || !strings.Contains(err.Error(), "ACTAS_CLIENTS") || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("bad env override: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("issuer: [\n"))
	f.Add([]byte("a: &x 1\nb: *x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data, env(secrets))
		if err == nil && c.Issuer == "" {
			t.Fatal("accepted a config without an issuer")
		}
	})
}

func TestUnknownEnv(t *testing.T) {
	c, err := Parse("actas.yaml", []byte(good), env(secrets))
	if err != nil {
		t.Fatal(err)
	}
	environ := []string{"PATH=/bin", "ACTAS_LISTEN=127.0.0.1:1", "ACTAS_SECRET_KEY=x", "ACTAS_SUPPORT_IDP_ISSUER=https://x",
		"ACTAS_NOTIFICATIONS_SMTP_HOST=h", "ACTAS_STORGE=sqlite://x", "ACTAS_NOPE=1"}
	got := UnknownEnv(c, environ)
	want := []string{
		"environment variable ACTAS_NOPE is not a configuration key",
		"environment variable ACTAS_STORGE is not a configuration key (did you mean ACTAS_STORAGE?)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got %q", got)
	}
}

// Commands that only open storage need neither the identity providers nor
// the clients' secrets.
func TestLoadStorageNeedsOnlyStorage(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/actas.yaml"
	if err := os.WriteFile(p, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p, env(nil)); err == nil {
		t.Fatal("the full load must want the secrets")
	}
	c, err := LoadStorage(p, env(nil))
	if err != nil || c.Storage != "sqlite://actas.db" {
		t.Fatalf("LoadStorage: %v", err)
	}
	if err := os.WriteFile(p, []byte(good+"bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadStorage(p, env(nil)); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("unknown keys are still errors: %v", err)
	}
}
