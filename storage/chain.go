package storage

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
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

// CheckpointHash seals a checkpoint: HMAC-SHA256 under the audit key over
// ["actas-checkpoint-v1", at, body, prev].
func CheckpointHash(key []byte, at time.Time, body, prev []byte) []byte {
	b, _ := json.Marshal([]any{"actas-checkpoint-v1", at.UTC().UnixMicro(), string(body), hex.EncodeToString(prev)})
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return m.Sum(nil)
}

// CheckpointPayload is what a checkpoint's signature covers.
func CheckpointPayload(hash []byte) []byte {
	b, _ := json.Marshal(map[string]string{"checkpoint": hex.EncodeToString(hash)})
	return b
}
