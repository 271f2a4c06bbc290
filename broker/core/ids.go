package core

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"time"
)

// sortable is base64url's alphabet in ASCII order, so that encoded bytes
// sort as the bytes do.
var sortable = base64.NewEncoding("-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz").WithPadding(base64.NoPadding)

// sortableID returns an identifier of the time in milliseconds followed by
// n random bytes, in base64url's characters. Identifiers made close in time
// sort together, so an index on them gains rows at its newest edge rather
// than on a random page: a token exchange writes a few pages instead of one
// per index. They are unique and unguessable, not secret: the time they
// show is a token's iat or a grant's created_at.
func sortableID(now time.Time, n int) string {
	b := make([]byte, 6+n)
	ms := uint64(now.UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	if _, err := rand.Read(b[6:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // unrecoverable: never issue weak identifiers
	}
	return sortable.EncodeToString(b)
}

// randomToken returns n random bytes, base64url.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // unrecoverable: never issue weak tokens
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// refreshPrefix begins every refresh token; 8 characters of time and 43
// of randomness follow it.
const refreshPrefix = "actas_rt_"

// newRefreshToken returns a refresh token issued at now.
func newRefreshToken(now time.Time) string { return refreshPrefix + sortableID(now, 32) }

// refreshKey is the stored form of a refresh token: the 6 bytes of time
// its token begins with, then its MAC. Tokens issued together are stored
// together, so issuing one writes to the newest page of the index rather
// than to a random one. A token of the earlier form, 43 random characters
// with no time, is stored as its MAC alone, as it was issued.
func (s *Service) refreshKey(token string) []byte {
	mac := s.secrets.RefreshHash(token)
	body, ok := strings.CutPrefix(token, refreshPrefix)
	if !ok || len(body) != 8+43 {
		return mac
	}
	t, err := sortable.DecodeString(body[:8])
	if err != nil {
		return mac
	}
	return append(t, mac...)
}
