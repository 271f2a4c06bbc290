package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"strings"

	"github.com/actas/actas/config"
	"github.com/actas/actas/internal/devidp"
)

// devEnv is a loopback dev setup: two dev IdPs and a config that trusts them.
type devEnv struct {
	customer, support *devidp.IDP
	cfg               *config.Config
	productSecret     string
}

// devEngineer is the dev setup's support engineer.
const devEngineer = "alice"

func devEngineerClaims() map[string]any {
	return map[string]any{"groups": []string{"support"}, "email": "alice@support.example", "amr": []string{"pwd", "mfa"}}
}

// devAdmin is the dev setup's customer, an admin of tenant acme.
const devAdmin = "ada"

func devAdminClaims() map[string]any {
	return map[string]any{"org_id": "acme", "role": "admin", "email": "ada@acme.example", "plan": "enterprise"}
}

const (
	devCLIClient     = "actas-cli"
	devProductClient = "product"
	devAudience      = "product"
)

// newDevEnv starts the dev identity providers. With keep set (the
// config-less serve), their addresses and keys and the product's secret
// are kept in files beside the SQLite database (0600), so a restart keeps
// every token and secret printed before; without it (the demo) all are
// fresh.
func newDevEnv(listen, storage string, keep bool) (*devEnv, error) {
	state := func(string) string { return "" }
	if keep {
		db := strings.TrimPrefix(storage, "sqlite://")
		state = func(name string) string { return db + ".dev-" + name }
	}
	cust, err := devidp.StartAt(state("customer-idp.json"))
	if err != nil {
		return nil, err
	}
	sup, err := devidp.StartAt(state("support-idp.json"))
	if err != nil {
		cust.Close()
		return nil, err
	}
	// The engineer CLI signs in at the dev support IdP as alice, at once;
	// the customer page at the dev customer IdP as ada, admin of acme.
	sup.SignInAs(devidp.User{Sub: devEngineer, Claims: devEngineerClaims()})
	cust.SignInAs(devidp.User{Sub: devAdmin, Claims: devAdminClaims()})
	secret, err := keptSecret(state("product-secret"))
	if err != nil {
		cust.Close()
		sup.Close()
		return nil, err
	}
	cfg := &config.Config{
		Issuer: "http://" + listen, Listen: listen, Storage: storage, PolicyFile: "(built-in sample policy)",
		SupportIDP:   config.SupportIDP{Issuer: sup.Issuer, ClientID: "actas", GroupsClaim: "groups"},
		CustomerIDPs: []config.CustomerIDP{{Issuer: cust.Issuer, Audience: "actas", TenantClaim: "org_id", RoleClaim: "role", ClientID: "actas-ui"}},
		// Loopback only: products on this machine may receive pushes.
		Notifications: config.Notifications{AllowLoopbackWebhooks: true},
		Clients: []config.Client{
			{ID: devCLIClient, Audience: devAudience},
			{ID: devProductClient, SecretEnv: "(generated)", Secret: secret, Audience: devAudience, CanIntrospect: true},
		},
	}
	cfg.SetDefaults()
	if probs := cfg.Validate(func(string) string { return "" }); len(probs) > 0 {
		cust.Close()
		sup.Close()
		return nil, errors.New("dev config: " + probs[0])
	}
	return &devEnv{customer: cust, support: sup, cfg: cfg, productSecret: secret}, nil
}

func (e *devEnv) Close() {
	e.customer.Close()
	e.support.Close()
}

func randomSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// keptSecret returns the secret in path, creating it (0600) when missing;
// with path "" a fresh one.
func keptSecret(path string) (string, error) {
	if path == "" {
		return randomSecret(), nil
	}
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	s := randomSecret()
	return s, os.WriteFile(path, []byte(s+"\n"), 0o600)
}
