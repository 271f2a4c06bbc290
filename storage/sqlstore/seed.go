package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

// SeedParams size a database for load measurements (actas-load -scale).
type SeedParams struct {
	Grants         int // redeemed, live grants, spread over Tenants
	Tenants        int
	TokensPerGrant int
	EventsPerGrant int // audit events, chained as every event is
	Now            time.Time
	// Progress, if set, is called after each batch with the grants written.
	Progress func(done int)
}

// Seed fills the store with p.Grants redeemed grants, their tokens and
// audit events, written by the same statements and chain code as real
// ones, in batches of 2,000 grants per transaction. It is for measuring
// actas at scale, never for a production database.
func (s *Store) Seed(ctx context.Context, p SeedParams) error {
	if p.Tenants < 1 || p.Grants < 0 {
		return fmt.Errorf("seed: want tenants >= 1 and grants >= 0")
	}
	now := micro(p.Now)
	for t := 0; t < p.Tenants; t++ {
		err := s.tx(ctx, func(tx *sqlx.Tx) error {
			_, err := s.exec(ctx, tx, `INSERT INTO tenants (id, support_enabled, allow_non_admin_grants, changed_by, changed_at, issuer)
				VALUES (?, TRUE, FALSE, 'seed', ?, '') ON CONFLICT (id) DO NOTHING`, seedTenant(t), now)
			return err
		})
		if err != nil {
			return err
		}
	}
	const batch = 2000
	for start := 0; start < p.Grants; start += batch {
		err := s.tx(ctx, func(tx *sqlx.Tx) error {
			for i := start; i < min(start+batch, p.Grants); i++ {
				if err := s.seedGrant(ctx, tx, i, p); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if p.Progress != nil {
			p.Progress(min(start+batch, p.Grants))
		}
	}
	return nil
}

func seedTenant(i int) string { return fmt.Sprintf("scale-%04d", i) }

func (s *Store) seedGrant(ctx context.Context, tx *sqlx.Tx, i int, p SeedParams) error {
	tenant, id := seedTenant(i%p.Tenants), fmt.Sprintf("grt_seed_%09d", i)
	created, expires := p.Now.Add(-time.Hour), p.Now.Add(30*24*time.Hour)
	if _, err := s.exec(ctx, tx, `INSERT INTO grants (id, tenant_id, role, environments, resources, ticket, ticket_system, ticket_severity,
		granted_by, granted_by_iss, granter_role, granter_claims, created_at, expires_at, code_hash, code_expires_at,
		approval_rule, approvals_needed, approval_deadline, redeemed_at, engineer_sub, engineer_iss, engineer_email, engineer_groups, engineer_claims)
		VALUES (?, ?, 'manage', '["production"]', '[]', '', '', '', ?, 'https://customer.seed', 'admin', '{"plan":"enterprise"}', ?, ?, NULL, ?,
		'', 0, NULL, ?, ?, 'https://support.seed', '', '["support"]', '{}')`,
		id, tenant, fmt.Sprintf("user-%d", i%5000), micro(created), micro(expires), micro(created.Add(24*time.Hour)),
		micro(created), fmt.Sprintf("eng-%d", i%300)); err != nil {
		return err
	}
	for k := 0; k < p.TokensPerGrant; k++ {
		is := storage.Issue{Token: storage.Token{JTI: fmt.Sprintf("seed-%09d-%02d", i, k), GrantID: id, ClientID: "cli",
			Audience: "product", Role: "manage", Scope: "read write", IssuedAt: created, ExpiresAt: created.Add(15 * time.Minute)}}
		if k == 0 {
			for e := 0; e < p.EventsPerGrant; e++ {
				is.Events = append(is.Events, storage.AuditEvent{Time: created, TenantID: tenant, ActorType: storage.ActorSupportEngineer,
					ActorID: "eng", Action: "token.issue", Target: is.Token.JTI, Outcome: "success", Detail: []byte(`{"seed":true}`)})
			}
		}
		if err := s.writeIssue(ctx, tx, is); err != nil {
			return err
		}
	}
	return nil
}
