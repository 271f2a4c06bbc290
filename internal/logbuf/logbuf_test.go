package logbuf

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int // writes
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return s.b.Write(p)
}

func (s *syncBuf) snapshot() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String(), s.n
}

func TestBatchesAndFlushesOnStop(t *testing.T) {
	var out syncBuf
	w := New(&out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx, time.Hour); close(done) }()
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() { w.Write([]byte(strings.Repeat("x", i%7) + "\n")) })
	}
	wg.Wait()
	if s, n := out.snapshot(); n != 0 || s != "" {
		t.Fatalf("written before any flush: %d writes", n)
	}
	cancel()
	<-done
	s, n := out.snapshot()
	if n != 1 || strings.Count(s, "\n") != 100 {
		t.Fatalf("after stop: %d writes, %d lines; want 1 write of 100 lines", n, strings.Count(s, "\n"))
	}
}

func TestFlushesAtInterval(t *testing.T) {
	var out syncBuf
	w := New(&out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx, 10*time.Millisecond)
	w.Write([]byte("line\n"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s, _ := out.snapshot(); s == "line\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a held line was never flushed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLargeWriteGoesThrough(t *testing.T) {
	var out syncBuf
	w := New(&out)
	big := strings.Repeat("y", size+1)
	w.Write([]byte(big))
	if s, _ := out.snapshot(); s != big {
		t.Fatalf("a write larger than the buffer was held (%d bytes out)", len(s))
	}
}
