// Package logbuf batches log lines into few writes: the server's JSON log
// (one line per request) was a write system call per request, 5% of the
// CPU of an introspection under load.
package logbuf

import (
	"bufio"
	"context"
	"io"
	"sync"
	"time"
)

// size is the buffer; a write that would overflow it flushes first.
const size = 64 << 10

// Writer buffers writes to an underlying writer. Run flushes it at an
// interval; Flush writes what is held. It is safe for concurrent use.
type Writer struct {
	mu sync.Mutex
	w  *bufio.Writer
}

// New returns a Writer on w.
func New(w io.Writer) *Writer { return &Writer{w: bufio.NewWriterSize(w, size)} }

// Write holds p until the next flush (or writes through when it holds
// more than the buffer).
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Write(p)
}

// Flush writes every held byte.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Flush()
}

// Run flushes every interval until ctx ends, then once more.
func (b *Writer) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			b.Flush()
			return
		case <-t.C:
			b.Flush()
		}
	}
}
