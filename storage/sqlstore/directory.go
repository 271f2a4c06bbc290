package sqlstore

import (
	"context"
	"database/sql"
	"errors"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

// CreateSCIMToken stores a tenant's SCIM bearer (its HMAC).
func (s *Store) CreateSCIMToken(ctx context.Context, t storage.SCIMToken, ev storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := s.exec(ctx, tx, `INSERT INTO scim_tokens (id, tenant_id, issuer, hash, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			t.ID, t.TenantID, t.Issuer, t.Hash, t.CreatedBy, micro(t.CreatedAt)); err != nil {
			return err
		}
		return s.insertAudit(ctx, tx, ev)
	})
}

// RevokeSCIMToken deletes a tenant's SCIM bearer.
func (s *Store) RevokeSCIMToken(ctx context.Context, tenantID, id string, ev storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `DELETE FROM scim_tokens WHERE tenant_id = ? AND id = ?`, tenantID, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return storage.ErrNotFound
		}
		return s.insertAudit(ctx, tx, ev)
	})
}

// SCIMTokenByHash finds a SCIM bearer.
func (s *Store) SCIMTokenByHash(ctx context.Context, hash []byte) (storage.SCIMToken, error) {
	var t storage.SCIMToken
	var at int64
	err := s.read.QueryRowxContext(ctx, s.read.Rebind(`SELECT id, tenant_id, issuer, hash, created_by, created_at FROM scim_tokens WHERE hash = ?`), hash).
		Scan(&t.ID, &t.TenantID, &t.Issuer, &t.Hash, &t.CreatedBy, &at)
	t.CreatedAt = fromMicro(at)
	return t, s.mapErr(err)
}

const userCols = `id, tenant_id, user_name, external_id, subject, issuer, display_name, active, role, emails, created_at, updated_at`

func scanUser(row scanner, u *storage.DirectoryUser) error {
	var emails string
	var created, updated int64
	if err := row.Scan(&u.ID, &u.TenantID, &u.UserName, &u.ExternalID, &u.Subject, &u.Issuer, &u.DisplayName, &u.Active,
		&u.Role, &emails, &created, &updated); err != nil {
		return err
	}
	u.CreatedAt, u.UpdatedAt = fromMicro(created), fromMicro(updated)
	var err error
	u.Emails, err = parseList(emails)
	return err
}

// PutDirectoryUser creates or replaces a user and applies what it changes.
func (s *Store) PutDirectoryUser(ctx context.Context, u storage.DirectoryUser, create bool, ch storage.RoleChange, ev storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		if create {
			var n int
			if err := s.queryRow(ctx, tx, `SELECT COUNT(*) FROM directory_users WHERE tenant_id = ? AND user_name = ?`, u.TenantID, u.UserName).Scan(&n); err != nil {
				return s.mapErr(err)
			}
			if n > 0 {
				return storage.ErrAlreadyExists
			}
			if _, err := s.exec(ctx, tx, `INSERT INTO directory_users (`+userCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				u.ID, u.TenantID, u.UserName, u.ExternalID, u.Subject, u.Issuer, u.DisplayName, u.Active, u.Role, jsonList(u.Emails),
				micro(u.CreatedAt), micro(u.UpdatedAt)); err != nil {
				return err
			}
		} else {
			var other int
			if err := s.queryRow(ctx, tx, `SELECT COUNT(*) FROM directory_users WHERE tenant_id = ? AND user_name = ? AND id <> ?`,
				u.TenantID, u.UserName, u.ID).Scan(&other); err != nil {
				return s.mapErr(err)
			}
			if other > 0 {
				return storage.ErrAlreadyExists
			}
			n, err := s.exec(ctx, tx, `UPDATE directory_users SET user_name = ?, external_id = ?, subject = ?, display_name = ?, active = ?,
				role = ?, emails = ?, updated_at = ? WHERE tenant_id = ? AND id = ?`,
				u.UserName, u.ExternalID, u.Subject, u.DisplayName, u.Active, u.Role, jsonList(u.Emails), micro(u.UpdatedAt), u.TenantID, u.ID)
			if err != nil {
				return err
			}
			if n == 0 {
				return storage.ErrNotFound
			}
		}
		if err := s.applyRoleChange(ctx, tx, ch); err != nil {
			return err
		}
		return s.insertAudit(ctx, tx, ev)
	})
}

// DirectoryUser returns one user.
func (s *Store) DirectoryUser(ctx context.Context, tenantID, id string) (storage.DirectoryUser, error) {
	var u storage.DirectoryUser
	err := scanUser(s.read.QueryRowxContext(ctx, s.read.Rebind(`SELECT `+userCols+` FROM directory_users WHERE tenant_id = ? AND id = ?`), tenantID, id), &u)
	return u, s.mapErr(err)
}

// DirectoryUsers lists users by userName order.
func (s *Store) DirectoryUsers(ctx context.Context, tenantID, userName string, start, count int) ([]storage.DirectoryUser, int, error) {
	where, args := `tenant_id = ?`, []any{tenantID}
	if userName != "" {
		where, args = where+` AND user_name = ?`, append(args, userName)
	}
	var total int
	if err := s.read.GetContext(ctx, &total, s.read.Rebind(`SELECT COUNT(*) FROM directory_users WHERE `+where), args...); err != nil {
		return nil, 0, s.mapErr(err)
	}
	rows, err := s.read.QueryxContext(ctx, s.read.Rebind(`SELECT `+userCols+` FROM directory_users WHERE `+where+
		` ORDER BY user_name LIMIT ? OFFSET ?`), append(args, count, max(start-1, 0))...)
	if err != nil {
		return nil, 0, s.mapErr(err)
	}
	defer rows.Close()
	out := []storage.DirectoryUser{}
	for rows.Next() {
		var u storage.DirectoryUser
		if err := scanUser(rows, &u); err != nil {
			return nil, 0, s.mapErr(err)
		}
		out = append(out, u)
	}
	return out, total, s.mapErr(rows.Err())
}

// DeleteDirectoryUser removes a user and applies what that ends.
func (s *Store) DeleteDirectoryUser(ctx context.Context, tenantID, id string, ch storage.RoleChange, ev storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `DELETE FROM directory_users WHERE tenant_id = ? AND id = ?`, tenantID, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return storage.ErrNotFound
		}
		if err := s.applyRoleChange(ctx, tx, ch); err != nil {
			return err
		}
		return s.insertAudit(ctx, tx, ev)
	})
}

// KnownRole is the last role recorded for a customer user.
func (s *Store) KnownRole(ctx context.Context, tenantID, sub, iss string) (string, error) {
	var role string
	err := s.read.GetContext(ctx, &role, s.read.Rebind(`SELECT role FROM customer_roles WHERE tenant_id = ? AND sub = ? AND iss = ?`), tenantID, sub, iss)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return role, s.mapErr(err)
}

// ApplyRole records a role from a fresh token and applies ch.
func (s *Store) ApplyRole(ctx context.Context, ch storage.RoleChange) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error { return s.applyRoleChange(ctx, tx, ch) })
}

// applyRoleChange is the live ceiling: the user's known role, their
// grants ended (through endGrants: audit, notifications, push signals
// follow) or capped, and their place among the tenant's admin addresses.
func (s *Store) applyRoleChange(ctx context.Context, tx *sqlx.Tx, ch storage.RoleChange) error {
	if ch.Sub == "" || (ch.Role == "" && !ch.EndAll) {
		return nil // nothing to match, or a directory that does not manage roles
	}
	if _, err := s.exec(ctx, tx, `INSERT INTO customer_roles (tenant_id, sub, iss, role, updated_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (tenant_id, sub, iss) DO UPDATE SET role = excluded.role, updated_at = excluded.updated_at`,
		ch.TenantID, ch.Sub, ch.Iss, ch.Role, micro(ch.Now)); err != nil {
		return err
	}
	mine := `granted_by = ? AND granted_by_iss = ? AND expires_at > ?`
	args := []any{ch.Sub, ch.Iss, micro(ch.Now)}
	switch {
	case ch.EndAll:
		if _, err := s.endGrants(ctx, tx, ch.TenantID, mine, args, ch.Now, "directory", ch.Reason, &ch.GrantEvent); err != nil {
			return err
		}
	case len(ch.Above) > 0:
		in := `role IN (` + marks(len(ch.Above)) + `)`
		for _, r := range ch.Above {
			args = append(args, r)
		}
		if ch.EndAbove {
			if _, err := s.endGrants(ctx, tx, ch.TenantID, mine+` AND `+in, args, ch.Now, "directory", ch.Reason, &ch.GrantEvent); err != nil {
				return err
			}
			break
		}
		if err := s.capGrants(ctx, tx, ch, mine+` AND `+in, args); err != nil {
			return err
		}
	}
	s.forgetRecipients(tx, ch.TenantID)
	if ch.AdminEmail != "" {
		_, err := s.exec(ctx, tx, `INSERT INTO tenant_admins (tenant_id, sub, email, seen_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (tenant_id, sub) DO UPDATE SET email = excluded.email, seen_at = excluded.seen_at`,
			ch.TenantID, ch.Sub, ch.AdminEmail, micro(ch.Now))
		return err
	}
	_, err := s.exec(ctx, tx, `DELETE FROM tenant_admins WHERE tenant_id = ? AND sub = ?`, ch.TenantID, ch.Sub)
	return err
}

// capGrants lowers the live grants matching cond, their tokens and refresh
// tokens to ch.Role: introspection and refresh answer the new role from
// now on; products that verify locally hear token-claims-change.
func (s *Store) capGrants(ctx context.Context, tx *sqlx.Tx, ch storage.RoleChange, cond string, args []any) error {
	var grants []endedGrant
	if err := tx.SelectContext(ctx, &grants, tx.Rebind(`SELECT id, tenant_id, granted_by, granted_by_iss, engineer_sub, engineer_iss
		FROM grants WHERE tenant_id = ? AND revoked_at IS NULL AND (`+cond+`) ORDER BY id`), append([]any{ch.TenantID}, args...)...); err != nil {
		return s.mapErr(err)
	}
	if len(grants) > 0 {
		if err := s.bumpState(ctx, tx); err != nil {
			return err
		}
	}
	for _, g := range grants {
		for _, q := range []string{`UPDATE grants SET role = ? WHERE id = ?`,
			`UPDATE tokens SET role = ? WHERE grant_id = ? AND revoked_at IS NULL`,
			`UPDATE refresh_tokens SET role = ? WHERE grant_id = ? AND revoked_at IS NULL`} {
			if _, err := s.exec(ctx, tx, q, ch.Role, g.ID); err != nil {
				return err
			}
		}
		e := ch.GrantEvent
		e.TenantID, e.Target = ch.TenantID, g.ID
		e.Detail = mergeDetail(e.Detail, map[string]any{"sub": g.Sub, "act": g.Act, "capped_to": ch.Role})
		if err := s.insertAudit(ctx, tx, e); err != nil {
			return err
		}
		if err := s.signal(ctx, tx, g, storage.Signal{Kind: storage.SignalClaimsChange, Time: ch.Now, Reason: ch.Reason,
			Initiator: "admin", Claims: map[string]any{"roles": []string{ch.Role}}}); err != nil {
			return err
		}
	}
	return nil
}
