package storage

import (
	"context"
	"time"
)

// Shared Signals stream delivery methods (SSF 1.0 §8.1.1) and states.
const (
	DeliveryPush = "urn:ietf:rfc:8935"
	DeliveryPoll = "urn:ietf:rfc:8936"

	StreamEnabled  = "enabled"
	StreamPaused   = "paused" // events are held, and delivered once enabled
	StreamDisabled = "disabled"
)

// Stream is a Shared Signals stream of one client (a product).
type Stream struct {
	ID                  string
	ClientID            string
	Audience            string // the aud of its SETs: the client's audience
	Method              string
	EndpointURL         string // push: the receiver; poll: actas's poll URL
	AuthorizationHeader string // push: sent as Authorization, if set
	EventsRequested     []string
	Description         string
	Status              string
	Reason              string
	CreatedAt           time.Time
	UpdatedAt           time.Time
}

// Signal kinds.
const (
	SignalSessionRevoked = "session-revoked"
	SignalClaimsChange   = "token-claims-change"
	SignalVerification   = "verification"
)

// Signal is one security event for one stream, stored when it happens
// (in the transaction of its cause) and turned into a signed SET when it
// is delivered. JTI is fixed when stored, so a retried push repeats it.
type Signal struct {
	Kind     string    `json:"kind"`
	JTI      string    `json:"jti"`
	Time     time.Time `json:"time"`
	Audience string    `json:"aud"`
	StreamID string    `json:"stream_id"`
	// The subject: the customer acted as, the grant, the engineer.
	Tenant      string `json:"tenant,omitempty"`
	CustomerIss string `json:"customer_iss,omitempty"`
	CustomerSub string `json:"customer_sub,omitempty"`
	EngineerIss string `json:"engineer_iss,omitempty"`
	EngineerSub string `json:"engineer_sub,omitempty"`
	GrantID     string `json:"grant_id,omitempty"`
	TokenJTI    string `json:"token_jti,omitempty"` // one token ended, not its grant
	Reason      string `json:"reason,omitempty"`
	// Initiator is CAEP's initiating_entity: admin, user, policy or system.
	Initiator string `json:"initiating_entity,omitempty"`
	// Claims is token-claims-change's new claims (roles, scope).
	Claims map[string]any `json:"claims,omitempty"`
	State  string         `json:"state,omitempty"` // verification
}

// PolledSignal is a held signal of a poll stream.
type PolledSignal struct {
	JTI     string
	Payload []byte // JSON: a Signal
}

// StreamStore is the Shared Signals part of Store.
type StreamStore interface {
	// CreateStream stores a new stream; ErrConflict if the client already
	// has max streams.
	CreateStream(ctx context.Context, st Stream, max int) error
	// Streams lists a client's streams.
	Streams(ctx context.Context, clientID string) ([]Stream, error)
	// Stream returns one stream of clientID ("" for any client);
	// ErrNotFound if there is none.
	Stream(ctx context.Context, clientID, id string) (Stream, error)
	// UpdateStream replaces a client's stream; when it becomes enabled,
	// events held while paused are delivered.
	UpdateStream(ctx context.Context, st Stream) error
	// DeleteStream removes a stream and every event held for it.
	DeleteStream(ctx context.Context, clientID, id string) error
	// AddSignal queues one signal for its stream.
	AddSignal(ctx context.Context, sig Signal) error
	// LiveTokens pages through unexpired, unrevoked tokens of live grants,
	// by jti after after, for re-deciding them under a new policy.
	LiveTokens(ctx context.Context, now time.Time, after string, limit int) ([]TokenState, error)
	// SignalToken queues a signal about one token for its audience's
	// streams (initiated by the policy).
	SignalToken(ctx context.Context, jti, kind, reason string, claims map[string]any, at time.Time) error
	// PollSignals removes the acknowledged signals of a poll stream and
	// returns up to max others, oldest first, and whether more remain.
	PollSignals(ctx context.Context, streamID string, acks []string, max int) ([]PolledSignal, bool, error)
}
