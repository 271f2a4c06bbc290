package sqlstore

import (
	"context"
	"sync"
	"time"
)

// versionReads combines the state-version reads of concurrent callers, as
// group commit combines writes: at most one read is in flight, and the
// callers that arrive meanwhile share the next one. Every caller is
// answered by a read that started after it arrived, so a change committed
// before a call began is always seen by that call; only the number of
// reads falls, from one per call to one per round.
type versionReads struct {
	read func(ctx context.Context) (int64, error)

	mu      sync.Mutex
	running bool          // a round's read is in flight
	next    *versionRound // the round the next arrivals join; nil: none yet
}

type versionRound struct {
	done chan struct{}
	v    int64
	err  error
}

// versionTimeout bounds one round's read: its callers have their own
// deadlines, and a stalled database must not hold the round forever.
const versionTimeout = 10 * time.Second

// get returns a state version read after the call began.
func (r *versionReads) get(ctx context.Context) (int64, error) {
	r.mu.Lock()
	if r.next == nil {
		r.next = &versionRound{done: make(chan struct{})}
	}
	rd := r.next
	if !r.running {
		r.running = true
		r.next = nil // sealed: later arrivals wait for the round after it
		go r.lead(rd)
	}
	r.mu.Unlock()
	select {
	case <-rd.done:
		return rd.v, rd.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// lead reads for rd, then for each round that gathered callers meanwhile,
// and stops when a read finds none waiting.
func (r *versionReads) lead(rd *versionRound) {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), versionTimeout)
		rd.v, rd.err = r.read(ctx)
		cancel()
		close(rd.done)
		r.mu.Lock()
		rd = r.next
		r.next = nil
		if rd == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
	}
}
