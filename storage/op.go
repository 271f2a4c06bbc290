package storage

import (
	"context"
	"time"
)

// Session kinds.
const (
	// SessionEngineer is a support engineer signed in at the support IdP
	// through actas's OpenID Provider flow.
	SessionEngineer = "engineer"
	// SessionCustomer is a customer user signed in at their own IdP on
	// the self-service page.
	SessionCustomer = "customer"
)

// Session is a browser session at actas, a row so that any replica serves
// it and ending it ends it everywhere. ID is public (the sid claim of OIDC
// Back-Channel Logout); the cookie carries a separate secret, stored here
// only as SecretHash.
type Session struct {
	ID         string
	SecretHash []byte
	Kind       string
	Subject    string
	Issuer     string
	Email      string
	Claims     []byte // JSON of the upstream ID token's claims
	AMR        []string
	ACR        string
	AuthTime   time.Time
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time // the absolute limit
	EndedAt    time.Time // zero while live
}

// AuthRequest is a sign-in in progress: an OIDC authorization request of
// a client (ClientID set) waiting on the engineer's sign-in at Upstream,
// or a customer's sign-in to the self-service page (ClientID ""). BrowserHash
// binds it to the browser that started it (a cookie), so that a link to
// its pages or to the upstream callback is useless in another browser.
type AuthRequest struct {
	ID               string
	BrowserHash      []byte
	Upstream         string // the issuer the person signs in at
	ClientID         string
	RedirectURI      string
	Scope            string
	State            string
	Nonce            string
	CodeChallenge    string
	Prompt           string
	MaxAge           int // seconds; -1 when absent
	UpstreamNonce    string
	UpstreamVerifier string
	SessionID        string // "" until the engineer is signed in
	CreatedAt        time.Time
	ExpiresAt        time.Time
}

// AuthCode is an issued OAuth authorization code, by the HMAC of its value.
type AuthCode struct {
	Hash          []byte
	ClientID      string
	RedirectURI   string
	CodeChallenge string
	Nonce         string
	SessionID     string
	GrantID       string
	TenantID      string
	Scope         string
	AuthTime      time.Time
	AMR           []string
	ACR           string
	CreatedAt     time.Time
	ExpiresAt     time.Time
	UsedAt        time.Time
}

// OPStore is the storage of the OpenID Provider flow.
type OPStore interface {
	// CreateSession stores a new session.
	CreateSession(ctx context.Context, s Session) error
	// SessionBySecret returns the live session of kind whose secret hashes
	// to hash, recording the use at now when the last one is older than a
	// minute; ErrNotFound if none is live (ended, past ExpiresAt, or idle
	// since before idleSince).
	SessionBySecret(ctx context.Context, kind string, hash []byte, now, idleSince time.Time) (Session, error)
	// EndSession ends a session: the access and refresh tokens issued in
	// it are revoked (ev written for each grant they belong to, target and
	// tenant filled in) and every client that holds them and takes
	// back-channel logout is told. False if it had already ended.
	EndSession(ctx context.Context, id string, at time.Time, reason string, ev AuditEvent) (bool, error)
	// ExpiredSessions lists up to limit sessions past their absolute limit
	// at now that have not been ended yet.
	ExpiredSessions(ctx context.Context, now time.Time, limit int) ([]string, error)

	// PutAuthRequest stores an authorization request.
	PutAuthRequest(ctx context.Context, a AuthRequest) error
	// AuthRequest returns a live authorization request; ErrNotFound if it
	// is unknown or expired.
	AuthRequest(ctx context.Context, id string, now time.Time) (AuthRequest, error)
	// SetAuthRequestSession records the session the request's sign-in made.
	SetAuthRequestSession(ctx context.Context, id, sessionID string) error
	// CreateAuthCode stores an authorization code and deletes the request
	// it answers, so that a request yields one code at most.
	CreateAuthCode(ctx context.Context, c AuthCode, requestID string) error
	// ExchangeAuthCode consumes a live code (single use) issued to
	// bind.ClientID for bind.RedirectURI and bind.CodeChallenge, and writes
	// what issue returns, in one transaction. A live code with another
	// binding is burnt. A code used before ends the grant it was issued
	// for (RFC 6749 §4.1.2: what it issued is revoked), with reuse as the
	// event. Every failure is ErrNotFound, as for an unknown code.
	ExchangeAuthCode(ctx context.Context, hash []byte, bind AuthCode, now time.Time, reuse AuditEvent, issue func(Grant, AuthCode) (Issue, error)) (Grant, AuthCode, error)

	// GrantsLastUse returns, for each of the tenant's grants ids that has
	// one, the latest first use of any of its tokens.
	GrantsLastUse(ctx context.Context, tenantID string, ids []string) (map[string]time.Time, error)
	// AuditAfter returns up to limit events of every tenant with an id
	// above afterID, oldest first: what the live feed tails.
	AuditAfter(ctx context.Context, afterID int64, limit int) ([]AuditEvent, error)
	// LastAuditID is the highest audit event id, 0 for none.
	LastAuditID(ctx context.Context) (int64, error)

	// EngineerGrants lists the live grants an engineer redeemed, newest first.
	EngineerGrants(ctx context.Context, sub, iss string, now time.Time) ([]Grant, error)
	// PruneOP deletes up to limit expired authorization requests, codes and
	// ended sessions, and returns how many.
	PruneOP(ctx context.Context, now time.Time, limit int) (int, error)
}

// Logout is the payload of an outbox message on channel "logout": one OIDC
// Back-Channel Logout token to send to a client. JTI is fixed when the
// cause happened, so that a retry repeats the same token.
type Logout struct {
	ClientID string    `json:"client_id"`
	Sub      string    `json:"sub"`
	SID      string    `json:"sid,omitempty"`
	Tenant   string    `json:"tenant"`
	GrantID  string    `json:"grant_id"`
	JTI      string    `json:"jti"`
	Time     time.Time `json:"time"`
	Reason   string    `json:"reason"`
}
