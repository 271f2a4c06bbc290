package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"

	"github.com/actas/actas/config"
	"github.com/actas/actas/internal/devidp"
)

// devEnv is a loopback dev setup: two dev IdPs and a config that trusts them.
type devEnv struct {
	customer, support *devidp.IDP
	cfg               *config.Config
	productSecret     string
}

const (
	devCLIClient     = "actas-cli"
	devProductClient = "product"
	devAudience      = "product"
)

func newDevEnv(listen, storage string) (*devEnv, error) {
	cust, err := devidp.Start()
	if err != nil {
		return nil, err
	}
	sup, err := devidp.Start()
	if err != nil {
		cust.Close()
		return nil, err
	}
	secret := randomSecret()
	cfg := &config.Config{
		Issuer: "http://" + listen, Listen: listen, Storage: storage, PolicyFile: "(built-in sample policy)",
		SupportIDP:   config.SupportIDP{Issuer: sup.Issuer, ClientID: "actas", GroupsClaim: "groups"},
		CustomerIDPs: []config.CustomerIDP{{Issuer: cust.Issuer, Audience: "actas", TenantClaim: "org_id", RoleClaim: "role"}},
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
