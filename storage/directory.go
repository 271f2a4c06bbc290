package storage

import (
	"context"
	"time"
)

// DirectoryUser is a customer user as the customer's directory (SCIM)
// describes them.
type DirectoryUser struct {
	ID          string // SCIM id, assigned by actas
	TenantID    string
	UserName    string
	ExternalID  string
	Subject     string // the sub of this user's tokens (customer_idps[].scim_subject)
	Issuer      string // the customer issuer of those tokens
	DisplayName string
	Active      bool
	Role        string   // primary roles value
	Emails      []string // primary first
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// SCIMToken is a tenant's SCIM bearer, stored by its HMAC.
type SCIMToken struct {
	ID        string
	TenantID  string
	Issuer    string // the issuer of the admin who created it: directory users are its users
	Hash      []byte
	CreatedBy string
	CreatedAt time.Time
}

// RoleChange is what a customer user's new state does, written in the
// transaction that records it: their grants end (deactivated, deleted, or
// demoted under on_granter_demotion: end), or their grants above the new
// role are capped to it; their address is or is not an admin address.
type RoleChange struct {
	TenantID, Sub, Iss string
	Role               string // the role now known; "" when the directory sends none: roles and admin addresses stay as they are
	EndAll             bool
	Above              []string // roles above Role: grants with these end or are capped
	EndAbove           bool
	AdminEmail         string // "" removes the user from the tenant's admin addresses
	Now                time.Time
	Reason             string
	GrantEvent         AuditEvent // one per ended or capped grant (target, sub, act filled in)
}

// RoleInactive is the known role of a user the directory deactivated or
// deleted: their tokens no longer act for the tenant.
const RoleInactive = "!inactive"

// DirectoryStore is the directory part of Store.
type DirectoryStore interface {
	CreateSCIMToken(ctx context.Context, t SCIMToken, ev AuditEvent) error
	// RevokeSCIMToken deletes a tenant's token; ErrNotFound if none.
	RevokeSCIMToken(ctx context.Context, tenantID, id string, ev AuditEvent) error
	// SCIMTokenByHash finds a token; ErrNotFound if none.
	SCIMTokenByHash(ctx context.Context, hash []byte) (SCIMToken, error)

	// PutDirectoryUser creates (create true; ErrAlreadyExists for a taken
	// userName) or replaces a user, applies ch and writes ev, at once.
	PutDirectoryUser(ctx context.Context, u DirectoryUser, create bool, ch RoleChange, ev AuditEvent) error
	DirectoryUser(ctx context.Context, tenantID, id string) (DirectoryUser, error)
	// DirectoryUsers lists a tenant's users (one userName if not ""), from
	// the start-th (1-based), at most count, and the total.
	DirectoryUsers(ctx context.Context, tenantID, userName string, start, count int) ([]DirectoryUser, int, error)
	DeleteDirectoryUser(ctx context.Context, tenantID, id string, ch RoleChange, ev AuditEvent) error

	// KnownRole is the last role seen for a customer user ("" if none).
	KnownRole(ctx context.Context, tenantID, sub, iss string) (string, error)
	// ApplyRole records a role seen in a fresh token and applies ch.
	ApplyRole(ctx context.Context, ch RoleChange) error
}
