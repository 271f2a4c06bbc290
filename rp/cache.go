package rp

import (
	"sync"
	"time"
)

// ttlCache is a bounded map whose entries expire. When full, expired
// entries go first, then arbitrary ones: it bounds memory, never
// correctness (a miss only costs a signature check or a round trip).
type ttlCache[K comparable, V any] struct {
	mu  sync.RWMutex
	max int
	m   map[K]ttlEntry[V]
	now func() time.Time
}

type ttlEntry[V any] struct {
	v   V
	exp time.Time
}

func newTTLCache[K comparable, V any](max int) *ttlCache[K, V] {
	return &ttlCache[K, V]{max: max, m: map[K]ttlEntry[V]{}, now: time.Now}
}

func (c *ttlCache[K, V]) get(k K) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || !c.now().Before(e.exp) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[K, V]) put(k K, v V, exp time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		c.evict()
	}
	c.m[k] = ttlEntry[V]{v, exp}
}

// evict drops expired entries, then arbitrary ones, down to 7/8 of max:
// the scan runs once per max/8 insertions, not on every one.
func (c *ttlCache[K, V]) evict() {
	now, target := c.now(), c.max-c.max/8-1
	for k, e := range c.m {
		if !now.Before(e.exp) {
			delete(c.m, k)
		}
	}
	for k := range c.m {
		if len(c.m) <= target {
			break
		}
		delete(c.m, k)
	}
}

// add puts k unless a live entry exists; false if it did (a replay).
func (c *ttlCache[K, V]) add(k K, v V, exp time.Time) bool {
	c.mu.Lock()
	e, ok := c.m[k]
	if ok && c.now().Before(e.exp) {
		c.mu.Unlock()
		return false
	}
	c.mu.Unlock()
	c.put(k, v, exp)
	return true
}

// revocations are what actas pushed: ended grants, ended tokens, and
// grants whose claims changed (tokens issued before must be refreshed).
// Entries live a day: no actas access token lives longer.
type revocations struct {
	grants  *ttlCache[string, struct{}]
	tokens  *ttlCache[string, struct{}]
	changed *ttlCache[string, time.Time]
}

const revocationTTL = 24 * time.Hour

func newRevocations() *revocations {
	return &revocations{grants: newTTLCache[string, struct{}](1 << 20), tokens: newTTLCache[string, struct{}](1 << 20),
		changed: newTTLCache[string, time.Time](1 << 16)}
}

func (r *revocations) ended(id *Identity, now time.Time) bool {
	if _, ok := r.grants.get(id.GrantID); ok {
		return true
	}
	if _, ok := r.tokens.get(id.JTI); ok {
		return true
	}
	// iat has whole seconds: a token of the very second of the change may
	// predate it, so it is refused too (a refresh a second later is not).
	if at, ok := r.changed.get(id.GrantID); ok && !id.IssuedAt.After(at) {
		return true
	}
	return false
}
