package storetest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/actas/actas/storage"
)

// testProofReplay: a proof identifier is accepted once while it is in
// force, by exactly one of many concurrent writers; once expired it may be
// recorded again, and pruning removes only expired records.
func testProofReplay(t *testing.T, s storage.Store) {
	ctx := context.Background()
	id := []byte("proof-1")
	exp := t0.Add(time.Minute)
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			err := s.UseProof(ctx, id, t0, exp)
			switch {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, storage.ErrAlreadyExists):
				t.Errorf("UseProof: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d writers recorded the same proof, want 1", ok.Load())
	}
	if err := s.UseProof(ctx, id, exp.Add(-time.Second), exp); !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("replay before expiry: %v", err)
	}
	if err := s.UseProof(ctx, []byte("proof-2"), t0, exp.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneProofs(ctx, exp, 100); err != nil || n != 1 {
		t.Fatalf("prune: %d %v, want 1 expired record", n, err)
	}
	if err := s.UseProof(ctx, id, exp, exp.Add(time.Minute)); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if err := s.UseProof(ctx, []byte("proof-2"), exp, exp.Add(time.Minute)); !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("prune removed a record in force: %v", err)
	}
}
