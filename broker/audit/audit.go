package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/actas/actas/claims"
	"github.com/actas/actas/storage"
)

// Actor is who performed an audited action.
type Actor struct {
	Type, ID, Iss string
}

// System is actas itself (sweeps, reloads, rotations, lockouts).
var System = Actor{Type: storage.ActorSystem, ID: "actas"}

// Action names. Every state change writes exactly one of these.
const (
	SupportEnable       = "support_access.enable"
	SupportDisable      = "support_access.disable"
	SupportUpdate       = "support_access.update"
	GrantCreate         = "grant.create"
	GrantRedeem         = "grant.redeem"
	GrantRevoke         = "grant.revoke"
	GrantExpire         = "grant.expire"
	TokenIssue          = "token.issue"
	TokenRefresh        = "token.refresh"
	TokenRevoke         = "token.revoke"
	TokenIntrospect     = "token.introspect"
	TenantLockout       = "tenant.lockout"
	TicketStatus        = "ticket.status"
	NotificationsUpdate = "notifications.update"
	PolicyReload        = "policy.reload"
	NotificationDead    = "notification.dead_letter"
	KeyCreate           = "key.create"
	KeyRotate           = "key.rotate"
	GrantCap            = "grant.cap"
	GrantApprove        = "grant.approve"
	GrantCodeIssue      = "grant.code_issue"
	SCIMTokenCreate     = "scim_token.create"
	SCIMTokenRevoke     = "scim_token.revoke"
	DirectoryUserPut    = "directory.user.put"
	DirectoryUserDelete = "directory.user.delete"
	CustomerDemoted     = "customer.demoted"
	StreamCreate        = "ssf.stream.create"
	StreamUpdate        = "ssf.stream.update"
	StreamDelete        = "ssf.stream.delete"
	SessionStart        = "session.start"
	SessionEnd          = "session.end"
)

// Outcomes.
const (
	Success = "success"
	Failure = "failure"
	Denied  = "denied"
)

// notifyKinds maps a successful action to the notification it triggers.
var notifyKinds = map[string]string{
	SupportEnable:  storage.NotifyToggle,
	SupportDisable: storage.NotifyToggle,
	SupportUpdate:  storage.NotifyToggle,
	TenantLockout:  storage.NotifyLockout,
	GrantCreate:    storage.NotifyGrantCreated,
	GrantRedeem:    storage.NotifyGrantRedeemed,
	GrantRevoke:    storage.NotifyGrantTerminated,
	GrantExpire:    storage.NotifyGrantExpired,
}

// Event builds an audit event; policySHA is the policy in force. It also
// names the notification kind the event triggers, if any, so that storage
// writes the outbox rows without interpreting actions.
func Event(at time.Time, policySHA string, a Actor, tenant, action, target, outcome string, detail map[string]any) storage.AuditEvent {
	var d []byte
	if detail != nil {
		d, _ = json.Marshal(detail)
	}
	ev := storage.AuditEvent{
		Time: at.UTC(), TenantID: tenant, ActorType: a.Type, ActorID: a.ID, ActorIss: a.Iss,
		Action: action, Target: target, Outcome: outcome, Detail: d, PolicySHA256: policySHA,
	}
	if outcome == Success {
		ev.Notify = notifyKinds[action]
	}
	return ev
}

// CheckpointVerifier checks checkpoint signatures against every public
// key ever stored (retired keys included), for `actas audit verify`.
func CheckpointVerifier(ctx context.Context, st interface {
	PublicKeys(context.Context) (map[string][]byte, error)
}) (func(storage.Checkpoint) error, error) {
	pubs, err := st.PublicKeys(ctx)
	if err != nil {
		return nil, err
	}
	var keys []*claims.Key
	for _, jwk := range pubs {
		k, err := claims.ParsePublic(jwk)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	ks, err := claims.NewKeySet(nil, keys)
	if err != nil {
		return nil, err
	}
	return func(c storage.Checkpoint) error {
		if c.Signature == "" {
			return errors.New("the checkpoint is not signed")
		}
		payload, err := ks.VerifyPayload(c.Signature)
		if err != nil {
			return err
		}
		if !bytes.Equal(payload, storage.CheckpointPayload(c.Hash)) {
			return errors.New("the signature is for another checkpoint")
		}
		return nil
	}, nil
}
