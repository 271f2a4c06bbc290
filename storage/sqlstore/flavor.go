package sqlstore

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// flavor holds what differs between the SQL dialects.
type flavor struct {
	name          string
	bindType      int
	blob          string // binary column type
	autoID        string // auto-increment primary key column definition
	forShare      string // row lock suffix for reads that must not race a writer
	migrateLock   string // statement run first in every migration transaction
	hasMigrations string // counts the schema_migrations table (0 or 1)
	isUnique      func(error) bool
	isRetry       func(error) bool
}

var flavorSQLite = flavor{
	name:          "sqlite",
	bindType:      sqlx.QUESTION,
	blob:          "BLOB",
	autoID:        "INTEGER PRIMARY KEY AUTOINCREMENT",
	forShare:      "", // BEGIN IMMEDIATE already serialises writers
	hasMigrations: `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`,
	isUnique: func(err error) bool {
		var e *sqlite.Error
		if errors.As(err, &e) {
			c := e.Code()
			return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
		}
		return false
	},
	isRetry: func(err error) bool {
		var e *sqlite.Error
		if errors.As(err, &e) {
			return e.Code()&0xff == sqlite3.SQLITE_BUSY
		}
		return false
	},
}

var flavorPostgres = flavor{
	name:          "postgres",
	bindType:      sqlx.DOLLAR,
	blob:          "BYTEA",
	autoID:        "BIGSERIAL PRIMARY KEY",
	forShare:      " FOR SHARE",
	migrateLock:   "SELECT pg_advisory_xact_lock(7254019200)",
	hasMigrations: `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'schema_migrations'`,
	isUnique: func(err error) bool {
		var e *pgconn.PgError
		return errors.As(err, &e) && e.Code == "23505"
	},
	isRetry: func(err error) bool {
		var e *pgconn.PgError
		return errors.As(err, &e) && (e.Code == "40001" || e.Code == "40P01")
	},
}

func (f flavor) ddl(s string) string {
	return strings.NewReplacer("{{BLOB}}", f.blob, "{{AUTOID}}", f.autoID).Replace(s)
}
