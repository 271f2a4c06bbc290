// Package boundcache is a concurrent map of bounded size for values that
// never change once computed (verified tokens, decoded snapshots). When a
// shard is full it is emptied: simple, bounded, and good enough for caches
// whose misses cost only recomputation.
package boundcache

import (
	"hash/maphash"
	"sync"
)

const shards = 16

// Cache maps K to V with at most shards*perShard entries.
type Cache[K comparable, V any] struct {
	seed     maphash.Seed
	perShard int
	shards   [shards]shard[K, V]
}

type shard[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]V
}

// New returns a cache holding at most about max entries.
func New[K comparable, V any](max int) *Cache[K, V] {
	return &Cache[K, V]{seed: maphash.MakeSeed(), perShard: max/shards + 1}
}

func (c *Cache[K, V]) shard(k K) *shard[K, V] {
	return &c.shards[maphash.Comparable(c.seed, k)%shards]
}

// Get returns the value for k.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	s := c.shard(k)
	s.mu.RLock()
	v, ok := s.m[k]
	s.mu.RUnlock()
	return v, ok
}

// Put stores v for k.
func (c *Cache[K, V]) Put(k K, v V) {
	s := c.shard(k)
	s.mu.Lock()
	if s.m == nil || len(s.m) >= c.perShard {
		s.m = make(map[K]V, 64)
	}
	s.m[k] = v
	s.mu.Unlock()
}

// Delete removes k.
func (c *Cache[K, V]) Delete(k K) {
	s := c.shard(k)
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}
