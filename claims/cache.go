package claims

import (
	"crypto/sha256"
	"sync"
)

// verifiedCache remembers tokens whose signature and header already
// verified against one KeySet, keyed by the SHA-256 of the exact bytes.
// Verifying the same bytes against the same keys is a pure function, so a
// hit skips only the signature check: issuer, audience and times are still
// checked on every call, and a new KeySet starts with an empty cache. Only
// tokens that verified are stored, so an attacker cannot fill it; it is
// bounded anyway, by shards that are emptied when full.
type verifiedCache struct {
	shards [cacheShards]cacheShard
}

const (
	cacheShards     = 16
	cacheShardLimit = 4096 // 65,536 tokens in all, about 10 MiB at most
)

type cacheShard struct {
	mu sync.RWMutex
	m  map[[32]byte]*Claims
}

func (c *verifiedCache) shard(k *[32]byte) *cacheShard { return &c.shards[k[0]%cacheShards] }

func (c *verifiedCache) get(k *[32]byte) *Claims {
	s := c.shard(k)
	s.mu.RLock()
	v := s.m[*k]
	s.mu.RUnlock()
	return v
}

func (c *verifiedCache) put(k *[32]byte, v *Claims) {
	s := c.shard(k)
	s.mu.Lock()
	if s.m == nil || len(s.m) >= cacheShardLimit {
		s.m = make(map[[32]byte]*Claims, 64)
	}
	s.m[*k] = v
	s.mu.Unlock()
}

func tokenKey(token string) [32]byte { return sha256.Sum256([]byte(token)) }
