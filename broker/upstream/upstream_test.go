package upstream

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/actas/actas/internal/testidp"
)

// An unknown kid refetches the upstream JWKS at most once per cooldown, so
// a flood of forged tokens cannot become a flood of upstream requests.
func TestJWKSRefetchCooldown(t *testing.T) {
	p := testidp.New(t)
	clock := time.Now()
	now := func() time.Time { return clock }
	up := New(p.Issuer, "actas", http.DefaultClient, now, time.Minute)
	ctx := context.Background()
	good := p.Mint(t, map[string]any{"sub": "alice"})
	if _, err := up.Verify(ctx, good); err != nil {
		t.Fatal(err)
	}
	if n := p.JWKSHits(); n != 1 {
		t.Fatalf("first verification fetched JWKS %d times", n)
	}
	other := testidp.New(t) // signs with kid k1 too, but another key
	other.Issuer = p.Issuer
	forged := other.Mint(t, map[string]any{"sub": "mallory"})
	forgedKid := p.SignWithKid(t, "unknown-kid")
	for i := 0; i < 50; i++ {
		if _, err := up.Verify(ctx, forged); err == nil {
			t.Fatal("forged token verified")
		}
		if _, err := up.Verify(ctx, forgedKid); err == nil {
			t.Fatal("token with unknown kid verified")
		}
	}
	if n := p.JWKSHits(); n != 1 {
		t.Fatalf("JWKS fetched %d times for 100 forged tokens within the cooldown, want 1", n)
	}
	clock = clock.Add(2 * time.Minute)
	for i := 0; i < 50; i++ {
		up.Verify(ctx, forgedKid)
	}
	if n := p.JWKSHits(); n != 2 {
		t.Fatalf("after the cooldown: %d fetches for 50 unknown kids, want 2", n)
	}
	if _, err := up.Verify(ctx, good); err != nil {
		t.Fatalf("the real key still verifies: %v", err)
	}
}

// A verified signature is remembered with the key set it verified against,
// and nothing else is: expiry is still checked on every call, and once the
// issuer's keys are replaced a token of the old key no longer verifies.
func TestVerifiedSignaturesFollowTheKeySet(t *testing.T) {
	p := testidp.New(t)
	clock := time.Now()
	up := New(p.Issuer, "actas", http.DefaultClient, func() time.Time { return clock }, time.Minute)
	ctx := context.Background()
	old := p.Mint(t, map[string]any{"sub": "alice", "exp": clock.Add(10 * time.Minute).Unix()})
	for range 2 {
		if _, err := up.Verify(ctx, old); err != nil {
			t.Fatal(err)
		}
	}
	p.Rotate(t, "k2")
	clock = clock.Add(2 * time.Minute) // past the refetch cooldown
	fresh := p.Mint(t, map[string]any{"sub": "bob"})
	if _, err := up.Verify(ctx, fresh); err != nil {
		t.Fatalf("a token of the new key: %v", err)
	}
	if n := p.JWKSHits(); n != 2 {
		t.Fatalf("JWKS fetched %d times, want 2 (the new kid refetches)", n)
	}
	if _, err := up.Verify(ctx, old); err == nil {
		t.Fatal("a token of the replaced key verified from the cache")
	}

	up = New(p.Issuer, "actas", http.DefaultClient, func() time.Time { return clock }, time.Minute)
	tok := p.Mint(t, map[string]any{"sub": "carol", "exp": clock.Add(time.Minute).Unix()})
	if _, err := up.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * time.Minute)
	if _, err := up.Verify(ctx, tok); err == nil {
		t.Fatal("an expired token verified from the cache")
	}
}
