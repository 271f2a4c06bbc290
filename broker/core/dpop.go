package core

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"

	"github.com/actas/actas/claims"
	"github.com/actas/actas/storage"
)

var errReplay = fail(KindProof, "the DPoP proof was used before; make a fresh proof for every request")

// UseProof records a verified DPoP proof (its key's thumbprint and jti)
// until it would be too old anyway; a proof seen before, on any replica,
// is refused (RFC 9449 §11.1).
func (s *Service) UseProof(ctx context.Context, jkt, jti string, expires time.Time) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	id := sha256.Sum256([]byte(jkt + "." + jti))
	err := s.store.UseProof(ctx, id[:], s.now(), expires)
	switch {
	case errors.Is(err, storage.ErrAlreadyExists):
		return errReplay
	case err != nil:
		return unavailable(err)
	}
	return nil
}

// PruneProofs forgets expired proof records, in small batches so that no
// request waits behind it.
func (s *Service) PruneProofs(ctx context.Context) {
	for {
		n, err := s.store.PruneProofs(ctx, s.now(), 1000)
		if err != nil {
			if ctx.Err() == nil {
				s.log.WarnContext(ctx, "pruning DPoP proof records", "err", err)
			}
			return
		}
		if n < 1000 {
			return
		}
	}
}

// AccessToken is an access token presented to actas itself (at
// /userinfo): verified, with the DPoP key it is bound to.
type AccessToken struct {
	Claims *claims.Claims
}

// Bound is the key thumbprint the token is bound to, "" for a bearer token.
func (a *AccessToken) Bound() string {
	if a.Claims.Cnf == nil {
		return ""
	}
	return a.Claims.Cnf.JKT
}

// ParseAccessToken verifies an actas access token's signature, issuer and
// times, for any audience; nil if it is not one. Whether it is still live
// is UserInfo's question.
func (s *Service) ParseAccessToken(token string) *AccessToken {
	cl, err := s.keys.KeySet().Verify(token, claims.VerifyOptions{Issuer: s.cfg.Issuer, SkipAudienceCheck: true, Now: s.now(), Leeway: s.skew})
	if err != nil {
		return nil
	}
	return &AccessToken{Claims: cl}
}

// UserInfo answers OIDC UserInfo for a verified token from stored state:
// nil if the token, its grant or the policy no longer allow it.
func (s *Service) UserInfo(ctx context.Context, at *AccessToken) (*Introspection, error) {
	return s.live(ctx, "", "", at.Claims, s.now())
}
