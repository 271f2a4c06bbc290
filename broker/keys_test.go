package broker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/actas/actas/broker/keys"
	"github.com/actas/actas/claims"
)

func TestRotationRetiresAfterWindow(t *testing.T) {
	e := newTestEnv(t)
	clock := time.Now()
	e.clock = func() time.Time { return clock }
	ctx := context.Background()
	admin := e.admin(t)
	e.enable(t, admin)
	old := e.redeem(t, admin, e.engineer(t))
	oldKid := e.srv.KeySet().SigningKeyID()

	if err := e.srv.Keys().Rotate(ctx, false); !errors.Is(err, keys.ErrNextTooNew) {
		t.Fatalf("rotating onto a just-published next key: %v", err)
	}
	clock = clock.Add(3 * time.Minute)
	if err := e.srv.Keys().Rotate(ctx, false); err != nil {
		t.Fatal(err)
	}
	if e.srv.KeySet().SigningKeyID() == oldKid || !strings.Contains(string(e.srv.KeySet().JWKS()), oldKid) {
		t.Fatal("after rotation the old key must stop signing and stay published")
	}
	o := claims.VerifyOptions{Issuer: e.srv.Core().Issuer(), Audience: "product", Now: clock, Leeway: time.Minute}
	if _, err := e.srv.KeySet().Verify(old, o); err != nil {
		t.Fatalf("a token of the previous key within its window: %v", err)
	}
	// Past access_ttl + refresh interval + skew the old key is retired.
	clock = clock.Add(e.srv.Policy().AccessTTL + keys.RefreshInterval + e.srv.Core().ClockSkew() + time.Second)
	if err := e.srv.RefreshKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(e.srv.KeySet().JWKS()), oldKid) {
		t.Fatal("a retired key is still published")
	}
	o.Now, o.Leeway = clock, 365*24*time.Hour // even ignoring expiry, the key is gone
	if _, err := e.srv.KeySet().Verify(old, o); !errors.Is(err, claims.ErrUnknownKey) {
		t.Fatalf("a token of a retired key: %v, want ErrUnknownKey", err)
	}
}
