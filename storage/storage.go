package storage

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Errors every backend maps its failures to, in one place per driver.
var (
	ErrNotFound       = errors.New("storage: not found")
	ErrAlreadyExists  = errors.New("storage: already exists")
	ErrSupportOff     = errors.New("storage: tenant support access is off")
	ErrEngineerLocked = errors.New("storage: engineer locked out after too many failed redemptions")
	ErrUnavailable    = errors.New("storage: unavailable")
	ErrConflict       = errors.New("storage: changed concurrently")
)

// Actor types recorded in audit events.
const (
	ActorTenantAdmin     = "tenant_admin"
	ActorCustomerUser    = "customer_user"
	ActorSupportEngineer = "support_engineer"
	ActorSystem          = "system"
	ActorClient          = "client"
)

// Tenant is a customer tenant's support-access setting. A tenant that was
// never stored has support access off.
type Tenant struct {
	ID                  string
	SupportEnabled      bool
	AllowNonAdminGrants bool
	ChangedBy           string
	ChangedAt           time.Time
	// Issuer is the customer issuer whose admin first enabled the tenant
	// ("" until then): only that issuer's tokens act for the tenant.
	Issuer string
}

// Grant statuses as the API reports them.
const (
	StatusPending = "pending" // code not yet redeemed
	StatusActive  = "active"  // redeemed, in use
	StatusRevoked = "revoked"
	StatusExpired = "expired"
	// StatusAwaiting: the policy wants other admins to approve; no code yet.
	StatusAwaiting = "awaiting_approval"
)

// Grant is one customer user's grant of access to the support team.
type Grant struct {
	ID             string
	TenantID       string
	Role           string
	Environments   []string
	Resources      []string
	Ticket         string // the ticket's id
	TicketSystem   string
	TicketSeverity string // S1..S4 or ""
	GrantedBy      string // the granting user's subject
	GrantedByIss   string
	GranterRole    string
	GranterClaims  []byte // JSON snapshot of the granter's token claims, for rules
	CreatedAt      time.Time
	ExpiresAt      time.Time
	CodeHash       []byte // nil once redeemed or voided
	CodeExpiresAt  time.Time
	RedeemedAt     time.Time // zero: not redeemed
	EngineerSub    string
	EngineerIss    string
	EngineerEmail  string
	EngineerGroups []string
	EngineerMFA    bool
	EngineerClaims []byte    // JSON snapshot of the engineer's ID token claims
	RevokedAt      time.Time // zero: not revoked
	RevokedBy      string
	RevokeReason   string
	// Approval (policy approval:): the rule, how many other admins must
	// approve, by when; ApprovedAt is zero until they have.
	ApprovalRule     string
	ApprovalsNeeded  int
	ApprovalDeadline time.Time
	ApprovedAt       time.Time
}

// Awaiting reports whether the grant still waits for approval.
func (g *Grant) Awaiting() bool { return g.ApprovalsNeeded > 0 && g.ApprovedAt.IsZero() }

// Status derives the grant's status at now.
func (g *Grant) Status(now time.Time) string {
	switch {
	case !g.RevokedAt.IsZero():
		return StatusRevoked
	case !now.Before(g.ExpiresAt):
		return StatusExpired
	case g.Awaiting() && !now.Before(g.ApprovalDeadline):
		return StatusExpired
	case g.Awaiting():
		return StatusAwaiting
	case g.RedeemedAt.IsZero() && !now.Before(g.CodeExpiresAt):
		return StatusExpired
	case g.RedeemedAt.IsZero():
		return StatusPending
	}
	return StatusActive
}

// Token is an issued access token, by its jti.
type Token struct {
	JTI         string
	GrantID     string
	ClientID    string
	Audience    string
	Role        string
	Scope       string
	IssuedAt    time.Time
	ExpiresAt   time.Time
	RevokedAt   time.Time
	FirstUsedAt time.Time // first active introspection; zero: never
	JKT         string    // DPoP key thumbprint the token is bound to; "" for a bearer token
	// SID is the OpenID Provider session the token was issued in; "" for
	// token exchange.
	SID string
}

// RefreshToken is an issued refresh token, by the HMAC of its value.
type RefreshToken struct {
	Hash      []byte
	GrantID   string
	ClientID  string
	Audience  string
	Role      string // the effective role of the tokens it was issued with
	Scope     string
	IssuedAt  time.Time
	ExpiresAt time.Time
	UsedAt    time.Time
	RevokedAt time.Time
	JKT       string // DPoP key the refresh token is bound to (public clients); "" if none
	SID       string // the OpenID Provider session, as on Token
}

// TokenState is everything introspection needs to decide, read in one
// query: the token, its grant and whether the tenant still allows support.
type TokenState struct {
	Token               Token
	Grant               Grant
	TenantEnabled       bool
	AllowNonAdminGrants bool
}

// AuditEvent is one audited action. Detail is a JSON object; it never holds
// codes, tokens or secrets.
type AuditEvent struct {
	ID           int64
	Seq          int64 // position in the tenant's chain, from 1
	PrevHash     []byte
	Hash         []byte
	Time         time.Time
	TenantID     string
	ActorType    string
	ActorID      string
	ActorIss     string
	Action       string
	Target       string
	Outcome      string
	Detail       []byte
	PolicySHA256 string
	// Notify is the notification kind the event triggers ("" for none),
	// decided by whoever built the event; it is not part of the chain.
	Notify string
}

// SigningKey states.
const (
	KeyNext     = "next"     // published, not yet signing
	KeyCurrent  = "current"  // signing
	KeyPrevious = "previous" // published until RetireAt
	KeyRetired  = "retired"  // no longer published
)

// SigningKey is a stored signing key; PrivateSealed is the private key
// encrypted under the key-encryption key.
type SigningKey struct {
	ID            string
	Algorithm     string
	PrivateSealed []byte
	PublicJWK     []byte
	State         string
	CreatedAt     time.Time
	ActivatedAt   time.Time
	RetireAt      time.Time
}

// Notification kinds.
const (
	NotifyToggle          = "toggle" // always sent to every tenant admin
	NotifyLockout         = "lockout"
	NotifyGrantCreated    = "grant_created"
	NotifyGrantRedeemed   = "grant_redeemed"
	NotifyGrantTerminated = "grant_terminated"
	NotifyGrantExpired    = "grant_expired"
	// NotifyApprovalRequested goes to admins: a grant waits for them.
	NotifyApprovalRequested = "approval_requested"
	// NotifyApprovalDecided goes to the granter alone: approved, refused
	// or timed out. It is not a group setting.
	NotifyApprovalDecided = "approval_decided"
)

// NotifyKinds lists every kind, for validation.
var NotifyKinds = []string{NotifyToggle, NotifyLockout, NotifyGrantCreated, NotifyGrantRedeemed, NotifyGrantTerminated, NotifyGrantExpired, NotifyApprovalRequested}

// Recipient groups of notifications.
const (
	ToAdmins  = "admins"  // every tenant admin actas has seen
	ToEmails  = "emails"  // the tenant's extra addresses
	ToWebhook = "webhook" // the tenant's webhook
)

// DefaultNotifyKinds is what each group receives when a tenant has set
// nothing. Toggles always reach every admin, whatever the settings.
func DefaultNotifyKinds() map[string][]string {
	return map[string][]string{ToAdmins: {NotifyToggle, NotifyLockout, NotifyApprovalRequested}, ToEmails: {NotifyToggle, NotifyLockout}, ToWebhook: {NotifyToggle, NotifyLockout}}
}

// NotificationSettings say which kinds a tenant's admins and extra
// addresses receive, and where its webhook is.
type NotificationSettings struct {
	TenantID   string
	Emails     []string
	WebhookURL string
	Kinds      map[string][]string // recipient group -> kinds
	ChangedBy  string
	ChangedAt  time.Time
}

// Notice is the payload of an outbox message: the audit event that caused
// it, as senders render it. It is encoded once, when the event is written.
type Notice struct {
	Kind      string          `json:"kind"`
	Tenant    string          `json:"tenant"`
	EventID   int64           `json:"event_id"`
	Seq       int64           `json:"seq"`
	Time      time.Time       `json:"time"`
	Action    string          `json:"action"`
	ActorType string          `json:"actor_type"`
	ActorID   string          `json:"actor_id"`
	Target    string          `json:"target"`
	Detail    json.RawMessage `json:"detail"`
}

// OutboxMessage is one message to deliver.
type OutboxMessage struct {
	ID          int64
	TenantID    string
	Kind        string
	Channel     string // "email" or "webhook"
	Destination string
	Payload     []byte // JSON: a Notice
	Attempts    int
	CreatedAt   time.Time
}

// Signer signs a payload as a compact JWS.
type Signer func(payload []byte) (string, error)

// Checkpoint is one link of the global chain over tenant heads.
type Checkpoint struct {
	ID        int64
	At        time.Time
	Body      []byte // JSON: {"heads": [...], "anchors": [...]}
	PrevHash  []byte
	Hash      []byte
	Signature string // compact JWS over {"checkpoint": hex(Hash)}; "" if unsigned
}

// PruneParams say what retention removes.
type PruneParams struct {
	Now             time.Time
	Sign            Signer // signs the checkpoint written before pruning
	AuditBefore     time.Time
	EngineersBefore time.Time
	ArchiveBefore   time.Time
}

// PruneResult counts what retention removed.
type PruneResult struct {
	AuditEvents, Engineers, Archived int
}

// TicketUpdate is one status change of a ticket.
type TicketUpdate struct {
	TenantID, TicketID, System string
	End                        bool
	Reason                     string
	Now, ReplayUntil           time.Time
	ReplayKey                  []byte
	Event, GrantEvent          AuditEvent
}

// RotateParams describe one key rotation.
type RotateParams struct {
	ExpectCurrent string
	Now           time.Time
	RetireAt      time.Time // when the outgoing key leaves the JWKS
	NewNext       SigningKey
	Event         AuditEvent
}

// Engineer identifies a support engineer (the actor).
type Engineer struct {
	Sub    string
	Iss    string
	Email  string
	Groups []string
	MFA    bool
	Claims []byte // JSON
}

// Issue is what a successful redemption or refresh writes, alongside the
// grant update, in one transaction.
type Issue struct {
	Token   Token
	Refresh *RefreshToken
	Events  []AuditEvent
}

// RedeemParams describe one redemption attempt.
type RedeemParams struct {
	TenantID    string
	CodeHash    []byte
	Engineer    Engineer
	Now         time.Time
	MaxFailures int
	// FailureWindow is how long failures are remembered per engineer.
	FailureWindow time.Duration
	// FailureEvent is written when the code does not match; LockoutEvent
	// too when the failure voids the tenant's pending codes.
	FailureEvent AuditEvent
	LockoutEvent AuditEvent
}

// RedeemFailure reports a redemption that did not match a live code.
type RedeemFailure struct {
	// Lockout is true when this failure reached the tenant's limit and
	// voided every pending code of the tenant.
	Lockout bool
	Voided  int
}

func (f *RedeemFailure) Error() string { return "storage: no live code matches" }

// Is makes errors.Is(err, ErrNotFound) true for a failed redemption.
func (f *RedeemFailure) Is(target error) bool { return target == ErrNotFound }

// GrantFilter selects grants for listing, newest first.
type GrantFilter struct {
	TenantID  string
	GrantedBy string // "": all users' grants
	Status    string // "active", "inactive" or "all"
	Now       time.Time
	Limit     int
	// After, when set, pages on: only grants listed after this one.
	After *GrantPosition
}

// GrantPosition is a grant's place in the newest-first order.
type GrantPosition struct {
	CreatedAt time.Time
	ID        string
}

// AuditFilter selects audit events, newest first.
type AuditFilter struct {
	TenantID  string
	ActorType string
	Action    string
	Since     time.Time
	Until     time.Time
	BeforeID  int64 // pagination: only events with a smaller id
	Limit     int
}

// Store is the persistence the broker needs. Every method that changes
// state takes the audit events to write in the same transaction.
type Store interface {
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
	Close() error

	// Tenant returns a tenant's setting; ErrNotFound if never set.
	Tenant(ctx context.Context, id string) (Tenant, error)
	// SetSupportAccess stores t and writes ev; turning support off ends
	// every live grant of the tenant, its tokens and pending codes, one
	// grantEnded event each (target and sub/act filled in), and returns how
	// many grants it ended.
	// A tenant bound to another issuer than t.Issuer is ErrConflict and
	// changes nothing; an unbound tenant is bound to t.Issuer.
	SetSupportAccess(ctx context.Context, t Tenant, ev, grantEnded AuditEvent) (int, error)

	// CreateGrant stores g; ErrSupportOff if the tenant's support access is
	// off, ErrAlreadyExists if its code collides with a live code.
	CreateGrant(ctx context.Context, g Grant, ev AuditEvent) error
	// Grant returns one grant of a tenant.
	Grant(ctx context.Context, tenantID, id string) (Grant, error)
	// Grants lists grants, newest first.
	Grants(ctx context.Context, f GrantFilter) ([]Grant, error)
	// RevokeGrant ends a grant and its tokens; false if it was already
	// revoked (idempotent).
	RevokeGrant(ctx context.Context, tenantID, id string, at time.Time, by, reason string, ev AuditEvent) (bool, error)

	// Redeem consumes the live code p.CodeHash of p.TenantID for
	// p.Engineer with one conditional update, calls issue with the bound
	// grant and its tenant as that transaction reads them, and writes what
	// it returns in the same transaction. If issue
	// fails nothing is written. issue may be called again for the same
	// redemption (a batch made again one by one); only what its last call
	// returned is written. A code that matches nothing counts a
	// failure and returns *RedeemFailure; an engineer past the limit gets
	// ErrEngineerLocked and changes nothing.
	Redeem(ctx context.Context, p RedeemParams, issue func(Grant, Tenant) (Issue, error)) (Grant, error)

	// Refresh consumes a live refresh token (single use) and writes what
	// issue returns. A token already used revokes its grant (reuse
	// detection, RFC 9700 §4.14.2) and returns ErrNotFound.
	Refresh(ctx context.Context, hash []byte, clientID string, now time.Time, reuse AuditEvent, issue func(Grant, RefreshToken) (Issue, error)) (Grant, error)
	// RefreshGrant returns the grant of a refresh token issued to clientID.
	RefreshGrant(ctx context.Context, hash []byte) (RefreshToken, Grant, error)

	// TokenState reads a token with its grant and tenant toggle.
	TokenState(ctx context.Context, jti string) (TokenState, error)
	// MarkTokenUsed records a token's first active introspection with its
	// audit event; false (and no event) if it was already recorded.
	MarkTokenUsed(ctx context.Context, jti string, at time.Time, ev AuditEvent) (bool, error)
	// RevokeToken revokes one access token; false if already revoked.
	RevokeToken(ctx context.Context, jti string, at time.Time, ev AuditEvent) (bool, error)

	// SigningKeys returns every stored key that is not retired.
	SigningKeys(ctx context.Context) ([]SigningKey, error)
	// PublicKeys returns the public JWK of every key ever stored, retired
	// ones included, by kid: old checkpoints stay verifiable.
	PublicKeys(ctx context.Context) (map[string][]byte, error)
	// AddSigningKey stores a key; ErrAlreadyExists if a key of the same
	// state "current" exists and k is current too.
	AddSigningKey(ctx context.Context, k SigningKey, ev AuditEvent) error

	// TicketUpdate records a ticket status change from the ticket hook.
	// replayKey must be new (else ErrAlreadyExists, nothing changes); it is
	// remembered until replayUntil. When end is set, every live grant of the
	// tenant bound to the ticket ends, one audit event each (from
	// grantEvent, target filled in); ev is written in any case. It returns
	// the ended grants' IDs.
	TicketUpdate(ctx context.Context, u TicketUpdate) ([]string, error)

	// NotificationSettings returns a tenant's settings (defaults if unset).
	NotificationSettings(ctx context.Context, tenantID string) (NotificationSettings, error)
	// SetNotificationSettings stores a tenant's settings.
	SetNotificationSettings(ctx context.Context, n NotificationSettings, ev AuditEvent) error
	// SeeAdmin records a tenant admin's address, from their own token.
	SeeAdmin(ctx context.Context, tenantID, sub, email string, at time.Time) error
	// ClaimOutbox leases up to limit due messages for delivery; a message
	// is leased to one claimer at a time, across replicas.
	ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]OutboxMessage, error)
	// DeadLetterOutbox stops retrying a message and writes ev, once.
	DeadLetterOutbox(ctx context.Context, id int64, at time.Time, errText string, ev AuditEvent) error
	// OutboxBacklog counts messages not yet delivered nor given up.
	OutboxBacklog(ctx context.Context) (int, error)
	// FinishOutbox records a delivery (err == "") or a failure with the
	// time of the next attempt.
	FinishOutbox(ctx context.Context, id int64, at time.Time, errText string, next time.Time) error

	// RecordExpiries writes one event (from ev, target and tenant filled
	// in) for each grant that expired by now, at most limit, once each,
	// and returns how many.
	RecordExpiries(ctx context.Context, now time.Time, limit int, ev AuditEvent) (int, error)

	// Checkpoint seals every tenant's chain head into the next link of the
	// global checkpoint chain; sign, if set, signs its hash for third
	// parties.
	Checkpoint(ctx context.Context, now time.Time, sign Signer) error
	// AuditCheckpoints returns the checkpoint chain, oldest first, and the
	// prune anchors.
	AuditCheckpoints(ctx context.Context) ([]Checkpoint, []AuditHead, error)
	// Prune applies retention: audit events before p.AuditBefore (after a
	// checkpoint naming the new anchors), engineer details of grants ended
	// before p.EngineersBefore, and grants ended before p.ArchiveBefore
	// (moved to the archive). Zero times skip that part. It works in
	// bounded batches, each its own short transaction.
	Prune(ctx context.Context, p PruneParams) (PruneResult, error)

	// RotateKeys makes the next key current and the current key previous
	// (published until p.RetireAt), retires previous keys past their time
	// and stores p.NewNext as the next key, in one transaction.
	// ErrConflict if the current key is no longer p.ExpectCurrent or there
	// is no next key: another replica rotated first.
	RotateKeys(ctx context.Context, p RotateParams) error

	StreamStore
	DirectoryStore
	OPStore

	// ApproveGrant records approver's approval of a grant awaiting it and,
	// once needed approvals are in, approves it (code redeemable until
	// codeExpires); ErrConflict if the grant does not await approval,
	// ErrNotFound if there is none. It returns whether this approval
	// completed it; ev is written for each new approver (its notification
	// only for the completing one), nothing for a repeated one.
	ApproveGrant(ctx context.Context, tenantID, id, approver string, now, codeExpires time.Time, ev AuditEvent) (bool, error)
	// IssueApprovedCode stores the code hash of an approved grant, once;
	// ErrConflict if it was issued before or the grant is not approved.
	IssueApprovedCode(ctx context.Context, tenantID, id string, codeHash []byte, now time.Time, ev AuditEvent) error
	// EndAwaiting ends a grant still awaiting approval (a refusal);
	// ErrConflict if it does not await approval.
	EndAwaiting(ctx context.Context, tenantID, id, by, reason string, now time.Time, ev AuditEvent) error
	// ExpireApprovals ends up to limit grants whose approval did not come
	// in time, one ev each, and returns how many.
	ExpireApprovals(ctx context.Context, now time.Time, limit int, ev AuditEvent) (int, error)

	// UseProof records a DPoP proof identifier until expires; ErrAlreadyExists
	// if it was recorded before and has not expired (a replay), whichever
	// replica saw it.
	UseProof(ctx context.Context, id []byte, now, expires time.Time) error
	// PruneProofs deletes up to limit proof records expired before now.
	PruneProofs(ctx context.Context, now time.Time, limit int) (int, error)

	// AppendAudit writes events that belong to no other change, all or
	// none, in one transaction.
	AppendAudit(ctx context.Context, evs ...AuditEvent) error
	// Audit lists events, newest first.
	Audit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)
	// AuditHeads returns the head of every tenant's audit chain.
	AuditHeads(ctx context.Context) ([]AuditHead, error)
	// AuditChain returns a tenant's events with seq > afterSeq in seq
	// order, at most limit.
	AuditChain(ctx context.Context, tenantID string, afterSeq int64, limit int) ([]AuditEvent, error)
}
