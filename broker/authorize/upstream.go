package authorize

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/actas/actas/config"
	"github.com/actas/actas/storage"
)

// supportIdP signs engineers in at the support organisation's IdP with the
// authorization code flow, PKCE S256 and a nonce; actas is a relying party
// there (support_idp.client_id, client_secret_env: absent, a public
// client). Discovery is fetched on first use and kept once it succeeds, so
// that actas starts while the IdP is down.
type supportIdP struct {
	cfg      config.SupportIDP
	redirect string
	client   *http.Client

	mu       sync.Mutex
	endpoint *oauth2.Endpoint
}

func (u *supportIdP) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, u.client)
}

// config returns the OAuth client at the support IdP.
func (u *supportIdP) config(ctx context.Context) (*oauth2.Config, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.endpoint == nil {
		p, err := oidc.NewProvider(u.ctx(ctx), u.cfg.Issuer)
		if err != nil {
			return nil, fmt.Errorf("support IdP discovery: %w", err)
		}
		ep := p.Endpoint()
		if u.cfg.ClientSecret == "" {
			ep.AuthStyle = oauth2.AuthStyleInParams // a public client sends client_id alone
		}
		u.endpoint = &ep
	}
	scopes := []string{oidc.ScopeOpenID, "email", "profile"}
	if u.cfg.GroupsClaim == "groups" {
		scopes = append(scopes, "groups") // Dex, Okta and others release groups only on request
	}
	return &oauth2.Config{ClientID: u.cfg.ClientID, ClientSecret: u.cfg.ClientSecret, Endpoint: *u.endpoint,
		RedirectURL: u.redirect, Scopes: scopes}, nil
}

// authURL is where the engineer's browser goes to sign in for request a.
// A product's prompt=login or max_age is passed on: actas cannot
// re-authenticate anyone itself (OIDC Core §3.1.2.1).
func (u *supportIdP) authURL(ctx context.Context, a storage.AuthRequest, forceLogin bool) (string, error) {
	c, err := u.config(ctx)
	if err != nil {
		return "", err
	}
	opts := []oauth2.AuthCodeOption{oidc.Nonce(a.UpstreamNonce), oauth2.S256ChallengeOption(a.UpstreamVerifier)}
	if forceLogin {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "login"))
	}
	if a.MaxAge >= 0 {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", strconv.Itoa(a.MaxAge)))
	}
	return c.AuthCodeURL(a.ID, opts...), nil
}

// exchange redeems the support IdP's code and returns its ID token.
func (u *supportIdP) exchange(ctx context.Context, a storage.AuthRequest, code string) (string, error) {
	c, err := u.config(ctx)
	if err != nil {
		return "", err
	}
	tok, err := c.Exchange(u.ctx(ctx), code, oauth2.VerifierOption(a.UpstreamVerifier))
	if err != nil {
		return "", fmt.Errorf("support IdP token endpoint: %w", err)
	}
	id, _ := tok.Extra("id_token").(string)
	if id == "" {
		return "", fmt.Errorf("support IdP returned no id_token")
	}
	return id, nil
}
