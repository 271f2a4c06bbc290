// Package sqlstore implements storage.Store on SQL databases: SQLite
// (modernc.org/sqlite, pure Go, one file, the default) and PostgreSQL
// (pgx). Queries are written once with ? placeholders and rebound; the
// real dialect differences live in one small flavor struct. Migrations are
// embedded, ordered, applied each in its own transaction and recorded.
//
// Single use is one statement: a code is consumed by a conditional UPDATE
// whose rows-affected decides, in the same transaction as the token insert
// and the audit event.
package sqlstore
