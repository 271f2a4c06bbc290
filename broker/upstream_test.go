package broker

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// An unknown kid refetches the upstream JWKS at most once per cooldown, so
// a flood of forged tokens cannot become a flood of upstream requests.
func TestJWKSRefetchCooldown(t *testing.T) {
	p := newTestIDP(t)
	clock := time.Now()
	now := func() time.Time { return clock }
	up := newUpstream(p.issuer, "actas", http.DefaultClient, now, time.Minute)
	ctx := context.Background()
	good := p.mint(t, map[string]any{"sub": "alice"})
	if _, _, err := up.verify(ctx, good); err != nil {
		t.Fatal(err)
	}
	if n := p.jwksHits.Load(); n != 1 {
		t.Fatalf("first verification fetched JWKS %d times", n)
	}
	other := newTestIDP(t) // signs with kid k1 too, but another key
	other.issuer = p.issuer
	forged := other.mint(t, map[string]any{"sub": "mallory"})
	forgedKid := signWithKid(t, p, "unknown-kid")
	for i := 0; i < 50; i++ {
		if _, _, err := up.verify(ctx, forged); err == nil {
			t.Fatal("forged token verified")
		}
		if _, _, err := up.verify(ctx, forgedKid); err == nil {
			t.Fatal("token with unknown kid verified")
		}
	}
	if n := p.jwksHits.Load(); n != 1 {
		t.Fatalf("JWKS fetched %d times for 100 forged tokens within the cooldown, want 1", n)
	}
	clock = clock.Add(2 * time.Minute)
	for i := 0; i < 50; i++ {
		up.verify(ctx, forgedKid)
	}
	if n := p.jwksHits.Load(); n != 2 {
		t.Fatalf("after the cooldown: %d fetches for 50 unknown kids, want 2", n)
	}
	if _, _, err := up.verify(ctx, good); err != nil {
		t.Fatalf("the real key still verifies: %v", err)
	}
}
