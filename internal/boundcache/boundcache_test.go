package boundcache

import (
	"sync"
	"testing"
)

func TestFresh(t *testing.T) {
	c := New[int, int](160)
	for i := 0; i < 10000; i++ {
		c.Put(i, i)
		if v, ok := c.Get(i); !ok || v != i {
			t.Fatalf("lost the entry just put")
		}
	}
}

func TestBoundedUnderConcurrency(t *testing.T) {
	c := New[int, int](160)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 10000; i++ {
				c.Put(g*10000+i, i)
				if v, ok := c.Get(g*10000 + i); ok && v != i {
					t.Errorf("wrong value")
					return
				}
			}
		}(g)
	}
	wg.Wait()
	total := 0
	for i := range c.shards {
		if n := len(c.shards[i].m); n > c.perShard {
			t.Fatalf("shard holds %d > %d", n, c.perShard)
		}
		total += len(c.shards[i].m)
	}
	if total > 16*c.perShard {
		t.Fatalf("cache holds %d entries", total)
	}
}
