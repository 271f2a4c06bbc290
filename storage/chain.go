package storage

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// GenesisHash is the prev_hash of a tenant's first audit event.
var GenesisHash = make([]byte, sha256.Size)

// EventHash is the HMAC-SHA256, under key, of an event's canonical
// encoding: a JSON array of its fields in a fixed order (times as UTC
// microseconds), ending with the previous event's hash. Any edit to a
// field, the order or the link changes it, and without the key (derived
// from the root secret, never stored in the database) nobody can re-seal
// an edited chain.
func EventHash(key []byte, ev *AuditEvent, prev []byte) []byte {
	detail := string(ev.Detail)
	if detail == "" {
		detail = "{}"
	}
	b, _ := json.Marshal([]any{
		"actas-audit-v1", ev.TenantID, ev.Seq, ev.Time.UTC().UnixMicro(), ev.ActorType, ev.ActorID, ev.ActorIss,
		ev.Action, ev.Target, ev.Outcome, detail, ev.PolicySHA256, hex.EncodeToString(prev),
	})
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return m.Sum(nil)
}

// AuditHead is the last event of a tenant's chain.
type AuditHead struct {
	TenantID string
	Seq      int64
	Hash     []byte
}

// ChainError names the first event at which a chain does not verify.
type ChainError struct {
	TenantID string
	Seq      int64
	ID       int64
	Reason   string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit chain of tenant %q breaks at seq %d (event id %d): %s", e.TenantID, e.Seq, e.ID, e.Reason)
}

// ChainVerifier checks one tenant's events fed in seq order.
type ChainVerifier struct {
	key    []byte
	tenant string
	seq    int64
	prev   []byte
	lastID int64
}

// NewChainVerifier starts verifying the chain of tenant.
func NewChainVerifier(key []byte, tenant string) *ChainVerifier {
	return &ChainVerifier{key: key, tenant: tenant, prev: GenesisHash}
}

// Next checks the next event of the chain.
func (v *ChainVerifier) Next(ev *AuditEvent) error {
	fail := func(reason string) error {
		return &ChainError{TenantID: v.tenant, Seq: ev.Seq, ID: ev.ID, Reason: reason}
	}
	switch {
	case ev.TenantID != v.tenant:
		return fail(fmt.Sprintf("event belongs to tenant %q", ev.TenantID))
	case ev.Seq != v.seq+1:
		return &ChainError{TenantID: v.tenant, Seq: v.seq + 1, ID: ev.ID,
			Reason: fmt.Sprintf("event seq %d is missing or out of order (next found: seq %d): an event is missing, inserted or reordered", v.seq+1, ev.Seq)}
	case !bytes.Equal(ev.PrevHash, v.prev):
		return fail("prev_hash does not match the previous event: an event is missing, inserted or reordered")
	case !hmac.Equal(ev.Hash, EventHash(v.key, ev, v.prev)):
		return fail("hash does not match the event's contents: the row was edited")
	}
	v.seq, v.prev, v.lastID = ev.Seq, ev.Hash, ev.ID
	return nil
}

// End checks that the chain ends at the recorded head.
func (v *ChainVerifier) End(head AuditHead) error {
	if head.Seq != v.seq || !bytes.Equal(head.Hash, v.prev) {
		return &ChainError{TenantID: v.tenant, Seq: v.seq, ID: v.lastID,
			Reason: fmt.Sprintf("the recorded head is seq %d but the chain ends at seq %d: events at the end were deleted, or the head was edited", head.Seq, v.seq)}
	}
	return nil
}

// AuditReader is what VerifyAudit reads.
type AuditReader interface {
	AuditHeads(ctx context.Context) ([]AuditHead, error)
	AuditChain(ctx context.Context, tenantID string, afterSeq int64, limit int) ([]AuditEvent, error)
}

// VerifyAudit walks every tenant's chain and returns how many events it
// checked and the first *ChainError, if any.
func VerifyAudit(ctx context.Context, r AuditReader, key []byte) (int, error) {
	heads, err := r.AuditHeads(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, h := range heads {
		v := NewChainVerifier(key, h.TenantID)
		var after int64
		for {
			evs, err := r.AuditChain(ctx, h.TenantID, after, 1000)
			if err != nil {
				return n, err
			}
			for i := range evs {
				if err := v.Next(&evs[i]); err != nil {
					return n, err
				}
				n++
			}
			if len(evs) < 1000 {
				break
			}
			after = evs[len(evs)-1].Seq
		}
		if err := v.End(h); err != nil {
			return n, err
		}
	}
	return n, nil
}
