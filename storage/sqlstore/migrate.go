package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// migration is one schema step. Released migrations are never edited; a
// change is a new migration.
type migration struct {
	version int
	name    string
	stmts   []string
}

var migrations = []migration{
	{1, "initial schema", []string{
		`CREATE TABLE tenants (
			id TEXT PRIMARY KEY,
			support_enabled BOOLEAN NOT NULL,
			allow_non_admin_grants BOOLEAN NOT NULL,
			changed_by TEXT NOT NULL,
			changed_at BIGINT NOT NULL
		)`,
		`CREATE TABLE grants (
			id TEXT PRIMARY KEY,
			tenant_id TEXT NOT NULL,
			role TEXT NOT NULL,
			environments TEXT NOT NULL,
			resources TEXT NOT NULL,
			ticket TEXT NOT NULL,
			granted_by TEXT NOT NULL,
			granted_by_iss TEXT NOT NULL,
			granter_role TEXT NOT NULL,
			granter_claims TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL,
			code_hash {{BLOB}},
			code_expires_at BIGINT NOT NULL,
			redeemed_at BIGINT,
			engineer_sub TEXT NOT NULL DEFAULT '',
			engineer_iss TEXT NOT NULL DEFAULT '',
			engineer_email TEXT NOT NULL DEFAULT '',
			revoked_at BIGINT,
			revoked_by TEXT NOT NULL DEFAULT '',
			revoke_reason TEXT NOT NULL DEFAULT ''
		)`,
		`CREATE UNIQUE INDEX grants_live_code ON grants (tenant_id, code_hash) WHERE code_hash IS NOT NULL`,
		`CREATE INDEX grants_tenant_created ON grants (tenant_id, created_at)`,
		`CREATE TABLE tokens (
			jti TEXT PRIMARY KEY,
			grant_id TEXT NOT NULL REFERENCES grants (id),
			client_id TEXT NOT NULL,
			audience TEXT NOT NULL,
			role TEXT NOT NULL,
			scope TEXT NOT NULL,
			issued_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL,
			revoked_at BIGINT
		)`,
		`CREATE INDEX tokens_grant ON tokens (grant_id)`,
		`CREATE TABLE refresh_tokens (
			hash {{BLOB}} PRIMARY KEY,
			grant_id TEXT NOT NULL REFERENCES grants (id),
			client_id TEXT NOT NULL,
			audience TEXT NOT NULL,
			role TEXT NOT NULL,
			scope TEXT NOT NULL,
			issued_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL,
			used_at BIGINT,
			revoked_at BIGINT
		)`,
		`CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id)`,
		`CREATE TABLE redeem_failures (
			scope TEXT NOT NULL,
			subject TEXT NOT NULL,
			count INTEGER NOT NULL,
			window_start BIGINT NOT NULL,
			PRIMARY KEY (scope, subject)
		)`,
		`CREATE TABLE signing_keys (
			id TEXT PRIMARY KEY,
			algorithm TEXT NOT NULL,
			private_sealed {{BLOB}} NOT NULL,
			public_jwk TEXT NOT NULL,
			state TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			activated_at BIGINT,
			retire_at BIGINT
		)`,
		`CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current'`,
		`CREATE TABLE audit_events (
			id {{AUTOID}},
			tenant_id TEXT NOT NULL,
			at BIGINT NOT NULL,
			actor_type TEXT NOT NULL,
			actor_id TEXT NOT NULL,
			actor_iss TEXT NOT NULL,
			action TEXT NOT NULL,
			target TEXT NOT NULL,
			outcome TEXT NOT NULL,
			detail TEXT NOT NULL,
			policy_sha256 TEXT NOT NULL
		)`,
		`CREATE INDEX audit_events_tenant ON audit_events (tenant_id, id)`,
	}},
	{2, "engineer facts on grants, for re-deciding live tokens", []string{
		`ALTER TABLE grants ADD COLUMN engineer_groups TEXT NOT NULL DEFAULT '[]'`,
		`ALTER TABLE grants ADD COLUMN engineer_mfa BOOLEAN NOT NULL DEFAULT FALSE`,
		`ALTER TABLE grants ADD COLUMN engineer_claims TEXT NOT NULL DEFAULT '{}'`,
	}},
	{3, "at most one next signing key", []string{
		`CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (state) WHERE state = 'next'`,
	}},
	{4, "hash-chained audit", []string{
		`ALTER TABLE audit_events ADD COLUMN seq BIGINT`,
		`ALTER TABLE audit_events ADD COLUMN prev_hash {{BLOB}}`,
		`ALTER TABLE audit_events ADD COLUMN hash {{BLOB}}`,
		`CREATE UNIQUE INDEX audit_events_chain ON audit_events (tenant_id, seq)`,
		`CREATE TABLE audit_heads (
			tenant_id TEXT PRIMARY KEY,
			seq BIGINT NOT NULL,
			hash {{BLOB}} NOT NULL
		)`,
	}},
	{5, "first introspection of each token", []string{
		`ALTER TABLE tokens ADD COLUMN first_used_at BIGINT`,
	}},
	{6, "ticket-bound grants and ticket hook replay protection", []string{
		`ALTER TABLE grants ADD COLUMN ticket_system TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE grants ADD COLUMN ticket_severity TEXT NOT NULL DEFAULT ''`,
		`CREATE INDEX grants_ticket ON grants (tenant_id, ticket) WHERE ticket <> ''`,
		`CREATE TABLE hook_replays (
			signature {{BLOB}} PRIMARY KEY,
			expires_at BIGINT NOT NULL
		)`,
	}},
	{7, "notifications: settings, admin addresses, durable outbox", []string{
		`CREATE TABLE notification_settings (
			tenant_id TEXT PRIMARY KEY,
			emails TEXT NOT NULL,
			webhook_url TEXT NOT NULL,
			kinds TEXT NOT NULL,
			changed_by TEXT NOT NULL,
			changed_at BIGINT NOT NULL
		)`,
		`CREATE TABLE tenant_admins (
			tenant_id TEXT NOT NULL,
			sub TEXT NOT NULL,
			email TEXT NOT NULL,
			seen_at BIGINT NOT NULL,
			PRIMARY KEY (tenant_id, sub)
		)`,
		`CREATE TABLE outbox (
			id {{AUTOID}},
			tenant_id TEXT NOT NULL,
			kind TEXT NOT NULL,
			channel TEXT NOT NULL,
			destination TEXT NOT NULL,
			payload TEXT NOT NULL,
			attempts INTEGER NOT NULL DEFAULT 0,
			next_attempt_at BIGINT NOT NULL,
			delivered_at BIGINT,
			last_error TEXT NOT NULL DEFAULT '',
			created_at BIGINT NOT NULL
		)`,
		`CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL`,
	}},
	{8, "expiry events", []string{
		`ALTER TABLE grants ADD COLUMN expiry_recorded BOOLEAN NOT NULL DEFAULT FALSE`,
		`CREATE INDEX grants_unrecorded_expiry ON grants (expires_at) WHERE expiry_recorded = FALSE AND revoked_at IS NULL`,
	}},
	{9, "retention: audit checkpoints and anchors, grant archive", []string{
		`CREATE TABLE audit_checkpoints (
			id {{AUTOID}},
			at BIGINT NOT NULL,
			body TEXT NOT NULL,
			prev_hash {{BLOB}} NOT NULL,
			hash {{BLOB}} NOT NULL
		)`,
		`CREATE TABLE audit_anchors (
			tenant_id TEXT PRIMARY KEY,
			seq BIGINT NOT NULL,
			hash {{BLOB}} NOT NULL
		)`,
		`CREATE TABLE grants_archive (
			id TEXT PRIMARY KEY,
			tenant_id TEXT NOT NULL,
			role TEXT NOT NULL,
			environments TEXT NOT NULL,
			resources TEXT NOT NULL,
			ticket TEXT NOT NULL,
			granted_by TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL,
			redeemed_at BIGINT,
			engineer_sub TEXT NOT NULL,
			engineer_iss TEXT NOT NULL,
			revoked_at BIGINT,
			revoke_reason TEXT NOT NULL,
			archived_at BIGINT NOT NULL
		)`,
	}},
	{10, "checkpoints signed with the token-signing key", []string{
		`ALTER TABLE audit_checkpoints ADD COLUMN signature TEXT NOT NULL DEFAULT ''`,
	}},
	{11, "outbox dead letters", []string{
		`ALTER TABLE outbox ADD COLUMN dead_at BIGINT`,
	}},
	{12, "DPoP: token key bindings and seen proofs", []string{
		`ALTER TABLE tokens ADD COLUMN jkt TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE refresh_tokens ADD COLUMN jkt TEXT NOT NULL DEFAULT ''`,
		`CREATE TABLE dpop_proofs (
			id {{BLOB}} PRIMARY KEY,
			expires_at BIGINT NOT NULL
		)`,
		`CREATE INDEX dpop_proofs_expiry ON dpop_proofs (expires_at)`,
	}},
	{13, "Shared Signals streams and held poll events", []string{
		`CREATE TABLE ssf_streams (
			id TEXT PRIMARY KEY,
			client_id TEXT NOT NULL,
			audience TEXT NOT NULL,
			method TEXT NOT NULL,
			endpoint_url TEXT NOT NULL,
			authorization_header TEXT NOT NULL DEFAULT '',
			events_requested TEXT NOT NULL,
			description TEXT NOT NULL DEFAULT '',
			status TEXT NOT NULL,
			reason TEXT NOT NULL DEFAULT '',
			created_at BIGINT NOT NULL,
			updated_at BIGINT NOT NULL
		)`,
		`CREATE INDEX ssf_streams_client ON ssf_streams (client_id)`,
		`CREATE INDEX ssf_streams_audience ON ssf_streams (audience)`,
		`CREATE TABLE ssf_poll (
			id {{AUTOID}},
			stream_id TEXT NOT NULL,
			jti TEXT NOT NULL,
			payload TEXT NOT NULL,
			created_at BIGINT NOT NULL
		)`,
		`CREATE UNIQUE INDEX ssf_poll_jti ON ssf_poll (stream_id, jti)`,
	}},
	{14, "tenants bound to the customer issuer that enabled them", []string{
		`ALTER TABLE tenants ADD COLUMN issuer TEXT NOT NULL DEFAULT ''`,
	}},
	{15, "directory: SCIM users and tokens, known roles", []string{
		`CREATE TABLE scim_tokens (
			id TEXT PRIMARY KEY,
			tenant_id TEXT NOT NULL,
			issuer TEXT NOT NULL,
			hash {{BLOB}} NOT NULL UNIQUE,
			created_by TEXT NOT NULL,
			created_at BIGINT NOT NULL
		)`,
		`CREATE TABLE directory_users (
			tenant_id TEXT NOT NULL,
			id TEXT NOT NULL,
			user_name TEXT NOT NULL,
			external_id TEXT NOT NULL,
			subject TEXT NOT NULL,
			issuer TEXT NOT NULL,
			display_name TEXT NOT NULL,
			active BOOLEAN NOT NULL,
			role TEXT NOT NULL,
			emails TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			updated_at BIGINT NOT NULL,
			PRIMARY KEY (tenant_id, id)
		)`,
		`CREATE UNIQUE INDEX directory_users_name ON directory_users (tenant_id, user_name)`,
		`CREATE TABLE customer_roles (
			tenant_id TEXT NOT NULL,
			sub TEXT NOT NULL,
			iss TEXT NOT NULL,
			role TEXT NOT NULL,
			updated_at BIGINT NOT NULL,
			PRIMARY KEY (tenant_id, sub, iss)
		)`,
	}},
	{16, "two-person approval of grants", []string{
		`ALTER TABLE grants ADD COLUMN approval_rule TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE grants ADD COLUMN approvals_needed INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE grants ADD COLUMN approval_deadline BIGINT`,
		`ALTER TABLE grants ADD COLUMN approved_at BIGINT`,
		`ALTER TABLE grants ADD COLUMN code_issued BOOLEAN NOT NULL DEFAULT FALSE`,
		`CREATE INDEX grants_awaiting ON grants (approval_deadline) WHERE approvals_needed > 0 AND approved_at IS NULL AND revoked_at IS NULL`,
		`CREATE TABLE grant_approvals (
			grant_id TEXT NOT NULL,
			approver TEXT NOT NULL,
			at BIGINT NOT NULL,
			PRIMARY KEY (grant_id, approver)
		)`,
	}},
	{17, "OpenID Provider: sessions, authorization requests and codes", []string{
		`CREATE TABLE sessions (
			id TEXT PRIMARY KEY,
			secret_hash {{BLOB}} NOT NULL UNIQUE,
			kind TEXT NOT NULL,
			subject TEXT NOT NULL,
			issuer TEXT NOT NULL,
			email TEXT NOT NULL,
			claims TEXT NOT NULL,
			amr TEXT NOT NULL,
			acr TEXT NOT NULL,
			auth_time BIGINT NOT NULL,
			created_at BIGINT NOT NULL,
			last_seen_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL,
			ended_at BIGINT
		)`,
		`CREATE TABLE auth_requests (
			id TEXT PRIMARY KEY,
			browser_hash {{BLOB}} NOT NULL,
			upstream TEXT NOT NULL,
			client_id TEXT NOT NULL,
			redirect_uri TEXT NOT NULL,
			scope TEXT NOT NULL,
			state TEXT NOT NULL,
			nonce TEXT NOT NULL,
			code_challenge TEXT NOT NULL,
			prompt TEXT NOT NULL,
			max_age INTEGER NOT NULL,
			upstream_nonce TEXT NOT NULL,
			upstream_verifier TEXT NOT NULL,
			session_id TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL
		)`,
		`CREATE TABLE auth_codes (
			hash {{BLOB}} PRIMARY KEY,
			client_id TEXT NOT NULL,
			redirect_uri TEXT NOT NULL,
			code_challenge TEXT NOT NULL,
			nonce TEXT NOT NULL,
			session_id TEXT NOT NULL,
			grant_id TEXT NOT NULL,
			tenant_id TEXT NOT NULL,
			scope TEXT NOT NULL,
			auth_time BIGINT NOT NULL,
			amr TEXT NOT NULL,
			acr TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL,
			used_at BIGINT,
			burnt BOOLEAN NOT NULL DEFAULT FALSE
		)`,
		`ALTER TABLE tokens ADD COLUMN sid TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE refresh_tokens ADD COLUMN sid TEXT NOT NULL DEFAULT ''`,
		`CREATE INDEX tokens_sid ON tokens (sid) WHERE sid <> ''`,
		`CREATE INDEX refresh_tokens_sid ON refresh_tokens (sid) WHERE sid <> ''`,
		`CREATE INDEX grants_engineer ON grants (engineer_sub, engineer_iss) WHERE revoked_at IS NULL`,
	}},
	{18, "state version: what validates cached token states", []string{
		`CREATE TABLE state_version (id INTEGER PRIMARY KEY, v BIGINT NOT NULL)`,
		`INSERT INTO state_version (id, v) VALUES (1, 0)`,
	}},
	{19, "ended grants found by index, not by scanning every grant", []string{
		`CREATE INDEX grants_expires ON grants (expires_at)`,
		`CREATE INDEX grants_revoked ON grants (revoked_at) WHERE revoked_at IS NOT NULL`,
	}},
}

// LatestVersion is the schema version this build expects.
func LatestVersion() int { return migrations[len(migrations)-1].version }

// migrate applies every pending migration, each in its own transaction,
// under the flavor's migration lock so concurrent starts are safe.
func migrate(ctx context.Context, db *sqlx.DB, f flavor, now time.Time) (applied int, err error) {
	if err := createMigrationsTable(ctx, db, f); err != nil {
		return 0, fmt.Errorf("creating schema_migrations: %w", err)
	}
	for _, m := range migrations {
		done, err := applyOne(ctx, db, f, m, now)
		if err != nil {
			return applied, fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
		if done {
			applied++
		}
	}
	return applied, nil
}

// createMigrationsTable creates the bookkeeping table under the migration
// lock: concurrent CREATE TABLE IF NOT EXISTS is not safe on PostgreSQL
// (two replicas starting at once can both try to create it).
func createMigrationsTable(ctx context.Context, db *sqlx.DB, f flavor) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if f.migrateLock != "" {
		if _, err := tx.ExecContext(ctx, f.migrateLock); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		return err
	}
	return tx.Commit()
}

func applyOne(ctx context.Context, db *sqlx.DB, f flavor, m migration, now time.Time) (bool, error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	if f.migrateLock != "" {
		if _, err := tx.ExecContext(ctx, f.migrateLock); err != nil {
			return false, err
		}
	}
	var n int
	if err := tx.GetContext(ctx, &n, tx.Rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), m.version); err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	for _, s := range m.stmts {
		if _, err := tx.ExecContext(ctx, f.ddl(s)); err != nil {
			return false, err
		}
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
		m.version, m.name, now.UnixMicro()); err != nil {
		return false, err
	}
	return true, tx.Commit()
}
