package rp

import (
	"testing"
	"time"
)

func TestTTLCacheBounded(t *testing.T) {
	c := newTTLCache[int, int](8)
	exp := time.Now().Add(time.Hour)
	for i := range 100 {
		c.put(i, i, exp)
		if len(c.m) > 8 {
			t.Fatalf("%d entries, max 8", len(c.m))
		}
	}
	if v, ok := c.get(99); !ok || v != 99 {
		t.Fatal("the newest entry was evicted")
	}
	c.put(1000, 1, time.Now().Add(-time.Second))
	if _, ok := c.get(1000); ok {
		t.Fatal("an expired entry was returned")
	}
}
