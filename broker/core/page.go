package core

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

// PageIssuers are the customer issuers the self-service page can sign in
// with (those with a client_id), in configuration order.
func (s *Service) PageIssuers() []string {
	var out []string
	for _, ci := range s.cfg.CustomerIDPs {
		if ci.ClientID != "" {
			out = append(out, ci.Issuer)
		}
	}
	return out
}

// NewCustomerSignIn starts a customer's sign-in at issuer for the
// self-service page; it returns the request (its ID is the state) and the
// secret of the cookie that binds it to this browser.
func (s *Service) NewCustomerSignIn(ctx context.Context, issuer string) (storage.AuthRequest, string, error) {
	ci := s.customers[issuer]
	if ci == nil || ci.ClientID == "" || s.pageVerifiers[issuer] == nil {
		return storage.AuthRequest{}, "", fail(KindNotFound, "this identity provider is not set up for signing in to the support access page")
	}
	return s.NewAuthRequest(ctx, storage.AuthRequest{Upstream: issuer, MaxAge: -1})
}

// SignInCustomer takes the ID token of a customer's sign-in for request a
// (a page sign-in): verified against the issuer with the page's client as
// audience, its nonce a's, then read exactly as a bearer token of the API
// is (tenant, role, directory). It starts a session and returns the
// customer, the session and its cookie secret.
func (s *Service) SignInCustomer(ctx context.Context, a storage.AuthRequest, rawIDToken string) (*Customer, storage.Session, string, error) {
	ci, v := s.customers[a.Upstream], s.pageVerifiers[a.Upstream]
	if a.ClientID != "" || ci == nil || v == nil {
		return nil, storage.Session{}, "", errAuthRequest
	}
	id, err := v.Verify(ctx, rawIDToken)
	if err != nil {
		if errors.Is(err, ErrIdPDown) {
			return nil, storage.Session{}, "", &Error{Kind: KindUnavailable, Message: "your identity provider is unreachable; try again", cause: err}
		}
		s.log.InfoContext(ctx, "page sign-in: ID token rejected", "err", err)
		return nil, storage.Session{}, "", fail(KindUnauthenticated, "your identity provider's answer could not be verified")
	}
	if !nonceMatches(id, a.UpstreamNonce) {
		return nil, storage.Session{}, "", fail(KindUnauthenticated, "your identity provider's answer is not for this sign-in (nonce)")
	}
	cu, err := s.customerFrom(ctx, ci, id, true)
	if err != nil {
		return nil, storage.Session{}, "", err
	}
	sess, secret, err := s.newSession(ctx, storage.SessionCustomer, id, cu.Email)
	if err != nil {
		return nil, storage.Session{}, "", err
	}
	s.appendAudit(ctx, s.event(cu.Actor(), cu.Tenant, audit.SessionStart, sess.ID, audit.Success, map[string]any{"surface": "page"}))
	return cu, sess, secret, nil
}

// PageCustomer returns the customer of a page session's cookie secret,
// re-checked on every call: tenant binding, and a role or account that
// changed since sign-in ends what the session may do.
func (s *Service) PageCustomer(ctx context.Context, secret string) (*Customer, storage.Session, error) {
	sess, err := s.Session(ctx, storage.SessionCustomer, secret)
	if err != nil {
		return nil, sess, err
	}
	ci := s.customers[sess.Issuer]
	if ci == nil {
		return nil, sess, errNoSession // the issuer left the configuration
	}
	var c map[string]any
	if err := json.Unmarshal(sess.Claims, &c); err != nil {
		return nil, sess, errNoSession
	}
	cu, err := s.customerFrom(ctx, ci, Identity{Subject: sess.Subject, Issuer: sess.Issuer, Claims: c}, false)
	return cu, sess, err
}

// EndPageSession signs a customer out of the page, on every replica.
func (s *Service) EndPageSession(ctx context.Context, cu *Customer, sess storage.Session) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.endSession(ctx, cu.Actor(), cu.Tenant, sess.ID, "logout")
}

// GrantsLastUse returns the latest first use of each grant's tokens.
func (s *Service) GrantsLastUse(ctx context.Context, cu *Customer, gs []storage.Grant) map[string]time.Time {
	ids := make([]string, 0, len(gs))
	for _, g := range gs {
		ids = append(ids, g.ID)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	m, err := s.store.GrantsLastUse(ctx, cu.Tenant, ids)
	if err != nil {
		s.log.WarnContext(ctx, "reading grants' last use", "err", err)
		return map[string]time.Time{}
	}
	return m
}
