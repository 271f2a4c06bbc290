package core

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// Ticket is a grant's ticket reference.
type Ticket struct {
	ID       string `json:"id"`
	System   string `json:"system,omitempty"`
	Severity string `json:"severity,omitempty"`
}

// GrantTicket is the ticket of a stored grant, nil if none.
func GrantTicket(g storage.Grant) *Ticket {
	if g.Ticket == "" {
		return nil
	}
	return &Ticket{ID: g.Ticket, System: g.TicketSystem, Severity: g.TicketSeverity}
}

var (
	ticketIDRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:#/-]{0,127}$`)
	ticketSystemRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
)

// ParseTicket accepts a bare id string or {"id", "system", "severity"},
// and returns a message for the client when it is malformed.
func ParseTicket(raw json.RawMessage) (Ticket, string) {
	var t Ticket
	if len(raw) == 0 || string(raw) == "null" {
		return t, ""
	}
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &t.ID); err != nil {
			return t, `"ticket" must be a string or an object`
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&t); err != nil {
			return t, `"ticket" must be a string or {"id", "system", "severity"}`
		}
	}
	switch {
	case t.ID == "" && string(raw) == `""`:
		return Ticket{}, ""
	case !ticketIDRE.MatchString(t.ID):
		return t, "ticket id: letters, digits and . _ : # / -, at most 128 characters"
	case t.System != "" && !ticketSystemRE.MatchString(t.System):
		return t, "ticket system: lowercase letters, digits, - and _, at most 64 characters"
	case t.Severity != "" && !policy.IsSeverity(t.Severity):
		return t, "ticket severity must be S1, S2, S3 or S4"
	}
	return t, ""
}

// maxExpiresIn bounds a grant's lifetime in seconds before any arithmetic
// (ten years); the policy's maximum is far lower.
const maxExpiresIn = 10 * 365 * 24 * 3600

// GrantRequest is a customer's request for a grant. At most one of
// ExpiresIn (seconds) and ExpiresAt may be set; neither means the policy's
// default.
type GrantRequest struct {
	Role         string
	Environments []string
	Resources    []string
	ExpiresIn    *int64
	ExpiresAt    *time.Time
	Ticket       Ticket
}

func invalidGrant(msg string) *Error {
	return coded(KindUnprocessable, "invalid_grant_request", msg)
}

// CreateGrant decides a grant under the policy in force, stores it and
// returns it with its one-time support code (stored only as a hash).
func (s *Service) CreateGrant(ctx context.Context, cu *Customer, r GrantRequest) (storage.Grant, string, error) {
	now := s.now().UTC()
	var ttl time.Duration
	switch {
	case r.Role == "":
		return storage.Grant{}, "", fail(KindInvalid, `field "role" is required`)
	case r.ExpiresIn != nil && r.ExpiresAt != nil:
		return storage.Grant{}, "", fail(KindInvalid, `give "expires_in" or "expires_at", not both`)
	case r.ExpiresIn != nil:
		if *r.ExpiresIn <= 0 || *r.ExpiresIn > maxExpiresIn {
			return storage.Grant{}, "", invalidGrant(fmt.Sprintf("expires_in must be between 1 and %d seconds", maxExpiresIn))
		}
		ttl = time.Duration(*r.ExpiresIn) * time.Second
	case r.ExpiresAt != nil:
		if !r.ExpiresAt.After(now) || r.ExpiresAt.Sub(now) > maxExpiresIn*time.Second {
			return storage.Grant{}, "", invalidGrant("expires_at must be in the future and within ten years")
		}
		ttl = r.ExpiresAt.Sub(now)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	t, err := s.Tenant(ctx, cu.Tenant)
	if err != nil {
		return storage.Grant{}, "", err
	}
	if !t.SupportEnabled {
		return storage.Grant{}, "", coded(KindConflict, "support_access_disabled", "support access is turned off for this tenant; a tenant admin must enable it first")
	}
	pol := s.policy.Load()
	d, err := pol.DecideGrant(policy.GrantRequest{
		Granter: policy.Granter{Sub: cu.Sub, Role: cu.Role, Claims: cu.Claims},
		Tenant:  policy.Tenant{ID: t.ID, SupportAccess: t.SupportEnabled, AllowNonAdminGrants: t.AllowNonAdminGrants},
		Role:    r.Role, Environments: r.Environments, Resources: r.Resources, TTL: ttl,
		Ticket: r.Ticket.ID, Tick: policy.Ticket{System: r.Ticket.System, Severity: r.Ticket.Severity}, Now: now,
	})
	var denied *policy.Denied
	var invalid *policy.Invalid
	switch {
	case errors.As(err, &denied):
		s.appendAudit(ctx, s.event(cu.Actor(), cu.Tenant, audit.GrantCreate, "", audit.Denied,
			map[string]any{"rule": denied.Rule, "reason": denied.Reason, "role": r.Role}))
		return storage.Grant{}, "", &Error{Kind: KindDenied, Code: "denied", Message: denied.Reason, Rule: denied.Rule}
	case errors.As(err, &invalid):
		return storage.Grant{}, "", invalidGrant(invalid.Error())
	case err != nil:
		return storage.Grant{}, "", fmt.Errorf("grant decision: %w", err)
	}
	claimsJSON, _ := json.Marshal(cu.Claims)
	g := storage.Grant{
		ID: "grt_" + sortableID(now, 12), TenantID: cu.Tenant, Role: d.Role, Environments: d.Environments,
		Resources: nonNil(d.Resources), Ticket: r.Ticket.ID, TicketSystem: r.Ticket.System, TicketSeverity: r.Ticket.Severity,
		GrantedBy: cu.Sub, GrantedByIss: cu.Iss,
		GranterRole: cu.Role, GranterClaims: claimsJSON, CreatedAt: now, ExpiresAt: d.ExpiresAt,
	}
	g.CodeExpiresAt = now.Add(pol.Code.RedeemWithin)
	if g.ExpiresAt.Before(g.CodeExpiresAt) {
		g.CodeExpiresAt = g.ExpiresAt
	}
	detail := map[string]any{
		"role": g.Role, "environments": g.Environments, "resources": g.Resources, "ticket": GrantTicket(g),
		"expires_at": g.ExpiresAt.Format(time.RFC3339), "code_expires_at": g.CodeExpiresAt.Format(time.RFC3339),
	}
	ap := pol.NeedsApproval(policy.GrantRequest{Granter: policy.Granter{Sub: cu.Sub, Role: cu.Role, Claims: cu.Claims},
		Tenant: policy.Tenant{ID: t.ID, SupportAccess: true, AllowNonAdminGrants: t.AllowNonAdminGrants},
		Ticket: r.Ticket.ID, Tick: policy.Ticket{System: r.Ticket.System, Severity: r.Ticket.Severity}, Now: now}, d)
	if ap != nil {
		// No code until other admins approve (policy approval:).
		g.ApprovalRule, g.ApprovalsNeeded = ap.Rule, ap.Approvers
		g.ApprovalDeadline = earliest(now.Add(ap.Within), g.ExpiresAt)
		g.CodeExpiresAt = time.Time{}
		detail["approval"] = map[string]any{"rule": ap.Rule, "approvers": ap.Approvers, "deadline": g.ApprovalDeadline.Format(time.RFC3339)}
		delete(detail, "code_expires_at")
	}
	ev := s.event(cu.Actor(), cu.Tenant, audit.GrantCreate, g.ID, audit.Success, detail)
	if ap != nil {
		ev.Notify = storage.NotifyApprovalRequested
	}
	var code string
	for attempt := 0; ; attempt++ {
		if ap == nil {
			code = newCode(pol.Code.Length)
			g.CodeHash = s.secrets.CodeHash(cu.Tenant, code)
		}
		err = s.store.CreateGrant(ctx, g, ev)
		if !errors.Is(err, storage.ErrAlreadyExists) || attempt == 8 {
			break
		}
	}
	switch {
	case errors.Is(err, storage.ErrSupportOff):
		return storage.Grant{}, "", coded(KindConflict, "support_access_disabled", "support access was turned off for this tenant")
	case err != nil:
		return storage.Grant{}, "", unavailable(err)
	}
	return g, code, nil
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// newCode returns n uniformly random decimal digits from crypto/rand.
func newCode(n int) string {
	limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil)
	v, err := rand.Int(rand.Reader, limit)
	if err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return fmt.Sprintf("%0*d", n, v)
}

// Grants lists the customer's own grants, or all of the tenant's for an
// admin, newest first, at most limit, after the position after (nil: from
// the newest); status is active, inactive or all.
// GrantsPage lists a page of grants, newest first, from cursor ("" for
// the first page), and returns the cursor of the next page ("" when this
// is the last). Cursors are sealed and bound to the tenant and the list.
func (s *Service) GrantsPage(ctx context.Context, cu *Customer, status string, limit int, cursor string) ([]storage.Grant, string, error) {
	var after *storage.GrantPosition
	if cursor != "" {
		pos, ok := s.secrets.OpenCursor(cu.Tenant+"\x00grants", cursor)
		if !ok || len(pos) < 9 {
			return nil, "", fail(KindInvalid, "cursor is invalid")
		}
		after = &storage.GrantPosition{CreatedAt: time.UnixMicro(int64(binary.BigEndian.Uint64(pos))), ID: string(pos[8:])}
	}
	grants, err := s.Grants(ctx, cu, status, limit, after)
	if err != nil || len(grants) < limit {
		return grants, "", err
	}
	last := grants[len(grants)-1]
	pos := append(binary.BigEndian.AppendUint64(nil, uint64(last.CreatedAt.UnixMicro())), last.ID...)
	return grants, s.secrets.SealCursor(cu.Tenant+"\x00grants", pos), nil
}

// Grants lists grants, newest first: all of the tenant's for an admin,
// the customer's own otherwise.
func (s *Service) Grants(ctx context.Context, cu *Customer, status string, limit int, after *storage.GrantPosition) ([]storage.Grant, error) {
	switch status {
	case "":
		status = "all"
	case "active", "inactive", "all":
	default:
		return nil, fail(KindInvalid, "status must be active, inactive or all")
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	f := storage.GrantFilter{TenantID: cu.Tenant, Status: status, Now: s.now(), Limit: limit, After: after}
	if !cu.Admin {
		f.GrantedBy = cu.Sub
	}
	grants, err := s.store.Grants(ctx, f)
	if err != nil {
		return nil, unavailable(err)
	}
	return grants, nil
}

var errNoGrant = coded(KindNotFound, "not_found", "no such resource")

// Grant returns one grant the customer may see: their own, or any of the
// tenant's for an admin. Another user's grant does not exist for a
// non-admin.
func (s *Service) Grant(ctx context.Context, cu *Customer, id string) (storage.Grant, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	g, err := s.store.Grant(ctx, cu.Tenant, id)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !cu.Admin && g.GrantedBy != cu.Sub) {
		return storage.Grant{}, errNoGrant
	}
	if err != nil {
		return storage.Grant{}, unavailable(err)
	}
	return g, nil
}

// Terminate ends a grant the customer may see (idempotent).
func (s *Service) Terminate(ctx context.Context, cu *Customer, id string) error {
	ctx, cancel := s.bound(ctx) // one bound for the read and the end
	defer cancel()
	g, err := s.Grant(ctx, cu, id)
	if err != nil {
		return err
	}
	return s.EndGrant(ctx, g, cu.Actor(), "terminated", nil)
}

// EndGrant is the one end of a single grant: the grant, its tokens and
// refresh tokens end, and one grant.revoke event (with its notifications)
// is written in the same transaction. Ending an ended grant is a no-op.
// Toggle-off, ticket closure and refresh-token reuse end grants inside
// storage with the same statements and the same event.
func (s *Service) EndGrant(ctx context.Context, g storage.Grant, by audit.Actor, reason string, extra map[string]any) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	detail := map[string]any{"reason": reason, "sub": g.GrantedBy, "act": g.EngineerSub}
	for k, v := range extra {
		detail[k] = v
	}
	ev := s.event(by, g.TenantID, audit.GrantRevoke, g.ID, audit.Success, detail)
	if _, err := s.store.RevokeGrant(ctx, g.TenantID, g.ID, s.now(), by.ID, reason, ev); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return unavailable(err)
	}
	return nil
}
