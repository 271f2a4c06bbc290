package sqlstore

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"
)

// checkpointEvery is how often the checkpointer copies the WAL into the
// database file on SQLite.
const checkpointEvery = 200 * time.Millisecond

// walRestartFrames is the WAL length, in frames, past which the
// checkpointer makes the log start over (64 MiB of 4 KiB pages).
var walRestartFrames = 16384

// walSizeLimit is the size the writer truncates the WAL file to when the
// log starts over (its journal_size_limit).
const walSizeLimit = 64 << 20

// runCheckpoints checkpoints the SQLite WAL from a connection of its own
// until the store closes. The writer's automatic checkpoint is off: it ran
// inside whichever commit crossed 1000 pages, so that commit, and the
// batch of redemptions waiting on it, paid for copying and syncing the
// database file. A passive checkpoint waits for no writer and no reader.
//
// But a passive checkpoint never lets the log start over under steady
// load: SQLite rewinds the WAL only when a write begins with every frame
// copied and no reader on the log, and with commits every few
// milliseconds and reads always in flight that moment never came (the WAL
// grew to 480 MB in 30 seconds of token exchanges, without bound). So once
// the log is walRestartFrames long, a RESTART checkpoint follows, on the
// write connection, between two write transactions (from another
// connection it would wait for a moment when no write is open, and under
// load there is none). It copies the few frames the passive passes left
// and waits for the reads in flight, and the next write starts the log
// from the beginning; the first commit after that truncates the file to
// walSizeLimit.
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
		err := db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &done)
		if err == nil && frames >= walRestartFrames {
			// A second passive pass copies what was committed during the
			// first, so the restart, which holds writes back, has little
			// left to copy: 4-8 ms under token-exchange load, against
			// 5-19 ms straight after one pass.
			_ = db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &done)
			_ = s.write.QueryRowContext(ctx, `PRAGMA wal_checkpoint(RESTART)`).Scan(&busy, &frames, &done)
		}
		cancel()
	}
}
