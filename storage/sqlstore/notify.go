package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

// NotificationSettings returns a tenant's settings, or the defaults.
func (s *Store) NotificationSettings(ctx context.Context, tenantID string) (storage.NotificationSettings, error) {
	n := storage.NotificationSettings{TenantID: tenantID, Emails: []string{}, Kinds: storage.DefaultNotifyKinds()}
	var emails, kinds string
	var at int64
	err := s.read.QueryRowxContext(ctx, s.read.Rebind(`SELECT emails, webhook_url, kinds, changed_by, changed_at FROM notification_settings WHERE tenant_id = ?`),
		tenantID).Scan(&emails, &n.WebhookURL, &kinds, &n.ChangedBy, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return n, nil
	}
	if err != nil {
		return n, s.mapErr(err)
	}
	if n.Emails, err = parseList(emails); err != nil {
		return n, err
	}
	if n.Kinds, err = parseKinds(kinds); err != nil {
		return n, err
	}
	n.ChangedAt = fromMicro(at)
	return n, nil
}

// SetNotificationSettings stores a tenant's settings.
func (s *Store) SetNotificationSettings(ctx context.Context, n storage.NotificationSettings, ev storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := s.exec(ctx, tx, `INSERT INTO notification_settings (tenant_id, emails, webhook_url, kinds, changed_by, changed_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE SET emails = excluded.emails, webhook_url = excluded.webhook_url,
			kinds = excluded.kinds, changed_by = excluded.changed_by, changed_at = excluded.changed_at`,
			n.TenantID, jsonList(n.Emails), n.WebhookURL, kindsJSON(n.Kinds), n.ChangedBy, micro(n.ChangedAt)); err != nil {
			return err
		}
		s.forgetRecipients(tx, n.TenantID)
		return s.insertAudit(ctx, tx, ev)
	})
}

// SeeAdmin records a tenant admin's address.
func (s *Store) SeeAdmin(ctx context.Context, tenantID, sub, email string, at time.Time) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		_, err := s.exec(ctx, tx, `INSERT INTO tenant_admins (tenant_id, sub, email, seen_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (tenant_id, sub) DO UPDATE SET email = excluded.email, seen_at = excluded.seen_at`, tenantID, sub, email, micro(at))
		s.forgetRecipients(tx, tenantID)
		return err
	})
}

// enqueue writes the outbox messages an audit event triggers, in its
// transaction: to every known admin and configured address when the
// tenant receives that kind (toggles always), and to the webhook.
func (s *Store) enqueue(ctx context.Context, tx *sqlx.Tx, ev *storage.AuditEvent, eventID int64) error {
	kind := ev.Notify
	if kind == "" || ev.TenantID == "" {
		return nil
	}
	if kind == storage.NotifyApprovalDecided {
		return s.enqueueGranter(ctx, tx, ev, eventID)
	}
	r, err := s.recipients(ctx, tx, ev.TenantID)
	if err != nil {
		return err
	}
	n := r.settings
	wants := func(group string) bool { return slices.Contains(n.Kinds[group], kind) }
	var admins []string
	if kind == storage.NotifyToggle || wants(storage.ToAdmins) {
		if !r.adminsOK {
			if err := tx.SelectContext(ctx, &r.admins, tx.Rebind(`SELECT email FROM tenant_admins WHERE tenant_id = ? ORDER BY email`), ev.TenantID); err != nil {
				return s.mapErr(err)
			}
			r.adminsOK = true
		}
		admins = slices.Clip(r.admins) // appended to below
	}
	if !wants(storage.ToEmails) {
		n.Emails = nil
	}
	if !wants(storage.ToWebhook) {
		n.WebhookURL = ""
	}
	detail := json.RawMessage(ev.Detail)
	if len(detail) == 0 {
		detail = json.RawMessage("null")
	}
	var payload []byte // made for the first message: most events have none
	seen := map[string]bool{}
	add := func(channel, dest string) error {
		if dest == "" || seen[channel+dest] {
			return nil
		}
		seen[channel+dest] = true
		if payload == nil {
			payload, _ = json.Marshal(storage.Notice{
				Kind: kind, Tenant: ev.TenantID, EventID: eventID, Seq: ev.Seq, Time: ev.Time.UTC(),
				Action: ev.Action, ActorType: ev.ActorType, ActorID: ev.ActorID, Target: ev.Target, Detail: detail,
			})
		}
		_, err := s.exec(ctx, tx, `INSERT INTO outbox (tenant_id, kind, channel, destination, payload, next_attempt_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, ev.TenantID, kind, channel, dest, string(payload), micro(ev.Time), micro(ev.Time))
		s.queued(tx)
		return err
	}
	for _, e := range append(admins, n.Emails...) {
		if err := add("email", e); err != nil {
			return err
		}
	}
	switch kind {
	case storage.NotifyGrantRedeemed, storage.NotifyGrantTerminated, storage.NotifyGrantExpired:
		// The granting user hears about their own grant, admin or not.
		email, err := s.granterEmail(ctx, tx, ev.TenantID, ev.Target)
		if err != nil {
			return err
		}
		if err := add("email", email); err != nil {
			return err
		}
	}
	return add("webhook", n.WebhookURL)
}

// recipients returns tenant's notification settings (the defaults if it
// has none), read once per transaction.
func (s *Store) recipients(ctx context.Context, tx *sqlx.Tx, tenant string) (*recipients, error) {
	if r, ok := s.state(tx).notify[tenant]; ok {
		return r, nil
	}
	if err := s.readSettings(ctx, tx, []string{tenant}); err != nil {
		return nil, err
	}
	return s.state(tx).notify[tenant], nil
}

// readRecipients reads, in one statement, the notification settings of
// the tenants of evs that enqueue will address and tx has not read.
func (s *Store) readRecipients(ctx context.Context, tx *sqlx.Tx, evs []storage.AuditEvent) error {
	st := s.state(tx)
	var need []string
	for _, ev := range evs {
		_, ok := st.notify[ev.TenantID]
		if !ok && ev.TenantID != "" && ev.Notify != "" && ev.Notify != storage.NotifyApprovalDecided && !slices.Contains(need, ev.TenantID) {
			need = append(need, ev.TenantID)
		}
	}
	if len(need) == 0 {
		return nil
	}
	return s.readSettings(ctx, tx, need)
}

// readSettings reads tenants' notification settings into tx's state, the
// defaults for a tenant that has none.
func (s *Store) readSettings(ctx context.Context, tx *sqlx.Tx, tenants []string) error {
	args := make([]any, len(tenants))
	for i, t := range tenants {
		args[i] = t
	}
	rows, err := s.queryRows(ctx, tx, `SELECT tenant_id, emails, webhook_url, kinds FROM notification_settings WHERE tenant_id IN (`+marks(len(tenants))+`)`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	read := map[string]*recipients{}
	for rows.Next() {
		var tenant, emails, kinds string
		var n storage.NotificationSettings
		if err := rows.Scan(&tenant, &emails, &n.WebhookURL, &kinds); err != nil {
			return s.mapErr(err)
		}
		if n.Emails, err = parseList(emails); err != nil {
			return err
		}
		if n.Kinds, err = parseKinds(kinds); err != nil {
			return err
		}
		read[tenant] = &recipients{settings: n}
	}
	if err := rows.Err(); err != nil {
		return s.mapErr(err)
	}
	st := s.state(tx)
	for _, t := range tenants {
		if st.notify[t] = read[t]; read[t] == nil {
			st.notify[t] = &recipients{settings: storage.NotificationSettings{Kinds: storage.DefaultNotifyKinds()}}
		}
	}
	return nil
}

// ClaimOutbox leases due messages with a conditional update each, so two
// replicas never send the same message at once.
func (s *Store) ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]storage.OutboxMessage, error) {
	type row struct {
		ID   int64 `db:"id"`
		Next int64 `db:"next_attempt_at"`
	}
	var due []row
	if err := s.read.SelectContext(ctx, &due, s.read.Rebind(`SELECT id, next_attempt_at FROM outbox
		WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?`), micro(now), limit); err != nil {
		return nil, s.mapErr(err)
	}
	var out []storage.OutboxMessage
	for _, d := range due {
		err := s.tx(ctx, func(tx *sqlx.Tx) error {
			var m storage.OutboxMessage
			var payload string
			var created int64
			err := s.queryRow(ctx, tx, `UPDATE outbox SET next_attempt_at = ?, attempts = attempts + 1
				WHERE id = ? AND next_attempt_at = ? AND delivered_at IS NULL
				RETURNING id, tenant_id, kind, channel, destination, payload, attempts, created_at`,
				micro(now.Add(lease)), d.ID, d.Next).Scan(&m.ID, &m.TenantID, &m.Kind, &m.Channel, &m.Destination, &payload, &m.Attempts, &created)
			if errors.Is(err, sql.ErrNoRows) {
				return nil // another claimer has it
			}
			if err != nil {
				return s.mapErr(err)
			}
			m.Payload, m.CreatedAt = []byte(payload), fromMicro(created)
			out = append(out, m)
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// FinishOutbox records the outcome of one delivery attempt.
func (s *Store) FinishOutbox(ctx context.Context, id int64, at time.Time, errText string, next time.Time) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		if errText == "" {
			_, err := s.exec(ctx, tx, `UPDATE outbox SET delivered_at = ?, last_error = '' WHERE id = ?`, micro(at), id)
			return err
		}
		_, err := s.exec(ctx, tx, `UPDATE outbox SET next_attempt_at = ?, last_error = ? WHERE id = ? AND delivered_at IS NULL`, micro(next), errText, id)
		return err
	})
}

// OutboxBacklog counts undelivered messages.
func (s *Store) OutboxBacklog(ctx context.Context) (int, error) {
	var n int
	err := s.read.GetContext(ctx, &n, `SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL`)
	return n, s.mapErr(err)
}

// DeadLetterOutbox gives up on a message after its last failed attempt,
// writing ev (which says so) in the same transaction.
func (s *Store) DeadLetterOutbox(ctx context.Context, id int64, at time.Time, errText string, ev storage.AuditEvent) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `UPDATE outbox SET dead_at = ?, last_error = ? WHERE id = ? AND delivered_at IS NULL AND dead_at IS NULL`,
			micro(at), errText, id)
		if err != nil || n == 0 {
			return err
		}
		return s.insertAudit(ctx, tx, ev)
	})
}

// RecordExpiries audits grants that ran out, once each.
func (s *Store) RecordExpiries(ctx context.Context, now time.Time, limit int, ev storage.AuditEvent) (int, error) {
	var n int
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		n = 0
		var rows []endedGrant
		if err := tx.SelectContext(ctx, &rows, tx.Rebind(`SELECT id, tenant_id, granted_by, granted_by_iss, engineer_sub, engineer_iss FROM grants
			WHERE expiry_recorded = FALSE AND revoked_at IS NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?`), micro(now), limit); err != nil {
			return s.mapErr(err)
		}
		var recorded []endedGrant
		for _, g := range rows {
			c, err := s.exec(ctx, tx, `UPDATE grants SET expiry_recorded = TRUE WHERE id = ? AND expiry_recorded = FALSE`, g.ID)
			if err != nil {
				return err
			}
			if c == 0 {
				continue // another replica recorded it
			}
			recorded = append(recorded, g)
			e := ev
			e.TenantID, e.Target = g.Tenant, g.ID
			e.Detail = mergeDetail(e.Detail, map[string]any{"sub": g.Sub, "act": g.Act})
			if err := s.insertAudit(ctx, tx, e); err != nil {
				return err
			}
		}
		n = len(recorded)
		if err := s.signalEnds(ctx, tx, recorded, now, "expired", "system"); err != nil {
			return err
		}
		return s.logoutEnds(ctx, tx, recorded, now, "expired")
	})
	return n, err
}

func kindsJSON(k map[string][]string) string {
	b, _ := json.Marshal(k)
	return string(b)
}

func parseKinds(s string) (map[string][]string, error) {
	var k map[string][]string
	if err := json.Unmarshal([]byte(s), &k); err != nil {
		return nil, fmt.Errorf("%w: corrupt notification kinds: %v", storage.ErrUnavailable, err)
	}
	return k, nil
}

// enqueueGranter tells a grant's granter about the grant, whatever the
// tenant's settings: it is their own request.
func (s *Store) enqueueGranter(ctx context.Context, tx *sqlx.Tx, ev *storage.AuditEvent, eventID int64) error {
	email, err := s.granterEmail(ctx, tx, ev.TenantID, ev.Target)
	if err != nil || email == "" {
		return err
	}
	payload, _ := json.Marshal(storage.Notice{Kind: ev.Notify, Tenant: ev.TenantID, EventID: eventID, Seq: ev.Seq, Time: ev.Time.UTC(),
		Action: ev.Action, ActorType: ev.ActorType, ActorID: ev.ActorID, Target: ev.Target, Detail: json.RawMessage(orNull(ev.Detail))})
	if _, err := s.exec(ctx, tx, `INSERT INTO outbox (tenant_id, kind, channel, destination, payload, next_attempt_at, created_at)
		VALUES (?, ?, 'email', ?, ?, ?, ?)`, ev.TenantID, ev.Notify, email, string(payload), micro(ev.Time), micro(ev.Time)); err != nil {
		return err
	}
	s.queued(tx)
	return nil
}

// granterEmail is the email claim of the granter's token when they made
// the grant, "" if none.
func (s *Store) granterEmail(ctx context.Context, tx *sqlx.Tx, tenant, grantID string) (string, error) {
	if claims, ok := s.state(tx).granters[grantID]; ok {
		return emailClaim(claims), nil
	}
	var claims string
	err := s.queryRow(ctx, tx, `SELECT granter_claims FROM grants WHERE tenant_id = ? AND id = ?`, tenant, grantID).Scan(&claims)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", s.mapErr(err)
	}
	return emailClaim([]byte(claims)), nil
}

// emailClaim is the email claim in a granter's claims, "" if there is no
// usable address.
func emailClaim(claims []byte) string {
	var c struct {
		Email string `json:"email"`
	}
	if json.Unmarshal(claims, &c) != nil {
		return ""
	}
	if a, err := mail.ParseAddress(c.Email); err != nil || a.Address != c.Email || len(c.Email) > 254 {
		return "" // no usable address: nothing to send
	}
	return c.Email
}

func orNull(b []byte) []byte {
	if len(b) == 0 {
		return []byte("null")
	}
	return b
}
