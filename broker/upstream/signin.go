package upstream

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

// SignIn signs people in at an upstream IdP with the authorization code
// flow, PKCE S256 and a nonce, actas a relying party there: engineers at
// the support IdP (support_idp.client_id, client_secret_env), customers at
// their own (customer_idps[].client_id, client_secret_env). Without a
// secret actas is a public client. Discovery is fetched on first use and
// kept once it succeeds, so that actas starts while the IdP is down. It
// returns the raw ID token; the core verifies it.
type SignIn struct {
	Issuer, ClientID, ClientSecret string
	// RedirectURL is actas's callback, registered at the IdP.
	RedirectURL string
	Scopes      []string
	Client      *http.Client

	mu       sync.Mutex
	endpoint *oauth2.Endpoint
}

// SupportSignIn is the engineers' sign-in at the support IdP. With
// groups_claim "groups" it asks for the groups scope, which Dex, Okta and
// others release only on request.
func SupportSignIn(c config.SupportIDP, redirect string, client *http.Client) *SignIn {
	scopes := []string{oidc.ScopeOpenID, "email", "profile"}
	if c.GroupsClaim == "groups" {
		scopes = append(scopes, "groups")
	}
	return &SignIn{Issuer: c.Issuer, ClientID: c.ClientID, ClientSecret: c.ClientSecret, RedirectURL: redirect, Scopes: scopes, Client: client}
}

func (u *SignIn) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, u.Client)
}

// config returns the OAuth client at the IdP.
func (u *SignIn) config(ctx context.Context) (*oauth2.Config, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.endpoint == nil {
		p, err := oidc.NewProvider(u.ctx(ctx), u.Issuer)
		if err != nil {
			return nil, fmt.Errorf("discovery at %s: %w", u.Issuer, err)
		}
		ep := p.Endpoint()
		if u.ClientSecret == "" {
			ep.AuthStyle = oauth2.AuthStyleInParams // a public client sends client_id alone
		}
		u.endpoint = &ep
	}
	return &oauth2.Config{ClientID: u.ClientID, ClientSecret: u.ClientSecret, Endpoint: *u.endpoint,
		RedirectURL: u.RedirectURL, Scopes: u.Scopes}, nil
}

// AuthURL is where the browser goes to sign in for request a (its ID is
// the state). forceLogin and a.MaxAge are passed on: actas cannot
// re-authenticate anyone itself (OIDC Core §3.1.2.1).
func (u *SignIn) AuthURL(ctx context.Context, a storage.AuthRequest, forceLogin bool) (string, error) {
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

// Exchange redeems the IdP's code and returns its ID token.
func (u *SignIn) Exchange(ctx context.Context, a storage.AuthRequest, code string) (string, error) {
	c, err := u.config(ctx)
	if err != nil {
		return "", err
	}
	tok, err := c.Exchange(u.ctx(ctx), code, oauth2.VerifierOption(a.UpstreamVerifier))
	if err != nil {
		return "", fmt.Errorf("token endpoint of %s: %w", u.Issuer, err)
	}
	id, _ := tok.Extra("id_token").(string)
	if id == "" {
		return "", fmt.Errorf("%s returned no id_token", u.Issuer)
	}
	return id, nil
}
