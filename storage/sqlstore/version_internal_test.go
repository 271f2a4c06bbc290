package sqlstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
)

// Every caller is answered by a read that started after it called: a
// change committed before a call began is never missed.
func TestVersionReadsStartAfterTheCall(t *testing.T) {
	var started atomic.Int64
	r := &versionReads{read: func(context.Context) (int64, error) { return started.Add(1), nil }}
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				before := started.Load()
				v, err := r.get(context.Background())
				if err != nil || v <= before {
					t.Errorf("answered by read %d, but %d reads had started before the call (%v)", v, before, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := started.Load(); n >= 64*200 {
		t.Errorf("%d reads for %d calls: nothing was shared", n, 64*200)
	}
}

// Callers that arrive while a read is in flight share the next one.
func TestVersionReadsCombine(t *testing.T) {
	release := make(chan struct{})
	var reads atomic.Int64
	r := &versionReads{read: func(context.Context) (int64, error) {
		if reads.Add(1) == 1 {
			<-release // the first round stays in flight while others arrive
		}
		return 7, nil
	}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.get(context.Background()) }()
	for !func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.running }() {
	}
	var joined atomic.Int64
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			joined.Add(1)
			if v, err := r.get(context.Background()); v != 7 || err != nil {
				t.Errorf("got %d %v", v, err)
			}
		}()
	}
	for joined.Load() < 50 {
	}
	for !func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.next != nil }() {
	}
	close(release)
	wg.Wait()
	if n := reads.Load(); n >= 51 {
		t.Fatalf("%d reads for 51 callers: the waiting ones shared none", n)
	}
}
