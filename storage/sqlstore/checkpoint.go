package sqlstore

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"
)

// checkpointEvery is how often the checkpointer copies the WAL into the
// database file on SQLite.
const checkpointEvery = 200 * time.Millisecond

// runCheckpoints checkpoints the SQLite WAL from a connection of its own
// until the store closes. The writer's automatic checkpoint is off: it ran
// inside whichever commit crossed 1000 pages, so that commit, and the
// batch of redemptions waiting on it, paid for copying and syncing the
// database file. A passive checkpoint waits for no writer and no reader.
func (s *Store) runCheckpoints(db *sqlx.DB) {
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var busy, frames, done int
		// A failure is retried at the next tick; the WAL only grows
		// meanwhile, and the next checkpoint that succeeds catches up.
		_ = db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &done)
		cancel()
	}
}
