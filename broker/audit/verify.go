package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/actas/actas/storage"
)

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
	return &ChainVerifier{key: key, tenant: tenant, prev: storage.GenesisHash}
}

// Next checks the next event of the chain.
func (v *ChainVerifier) Next(ev *storage.AuditEvent) error {
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
	case !hmac.Equal(ev.Hash, storage.EventHash(v.key, ev, v.prev)):
		return fail("hash does not match the event's contents: the row was edited")
	}
	v.seq, v.prev, v.lastID = ev.Seq, ev.Hash, ev.ID
	return nil
}

// End checks that the chain ends at the recorded head.
func (v *ChainVerifier) End(head storage.AuditHead) error {
	if head.Seq != v.seq || !bytes.Equal(head.Hash, v.prev) {
		return &ChainError{TenantID: v.tenant, Seq: v.seq, ID: v.lastID,
			Reason: fmt.Sprintf("the recorded head is seq %d but the chain ends at seq %d: events at the end were deleted, or the head was edited", head.Seq, v.seq)}
	}
	return nil
}

// Reader is what Verify reads.
type Reader interface {
	AuditHeads(ctx context.Context) ([]storage.AuditHead, error)
	AuditChain(ctx context.Context, tenantID string, afterSeq int64, limit int) ([]storage.AuditEvent, error)
	AuditCheckpoints(ctx context.Context) ([]storage.Checkpoint, []storage.AuditHead, error)
}

type sealedHead struct {
	Tenant string `json:"tenant"`
	Seq    int64  `json:"seq"`
	Hash   string `json:"hash"`
}

// verifyCheckpoints checks the checkpoint chain and returns, per tenant,
// the sealed anchor (from the latest checkpoint naming one) and the
// highest sealed head.
func verifyCheckpoints(cps []storage.Checkpoint, key []byte, checkSig func(storage.Checkpoint) error) (map[string]sealedHead, map[string]sealedHead, error) {
	anchors, heads := map[string]sealedHead{}, map[string]sealedHead{}
	prev := storage.GenesisHash
	for _, c := range cps {
		fail := func(reason string) error {
			return &ChainError{TenantID: "(checkpoints)", Seq: c.ID, ID: c.ID, Reason: reason}
		}
		if !bytes.Equal(c.PrevHash, prev) {
			return nil, nil, fail("prev_hash does not match the previous checkpoint: a checkpoint is missing or reordered")
		}
		if !hmac.Equal(c.Hash, storage.CheckpointHash(key, c.At, c.Body, c.PrevHash)) {
			return nil, nil, fail("seal does not match: the checkpoint was edited")
		}
		if checkSig != nil {
			if err := checkSig(c); err != nil {
				return nil, nil, fail("signature does not verify: " + err.Error())
			}
		}
		var body struct{ Heads, Anchors []sealedHead }
		if err := json.Unmarshal(c.Body, &body); err != nil {
			return nil, nil, fail("unreadable body")
		}
		for _, a := range body.Anchors {
			anchors[a.Tenant] = a
		}
		for _, h := range body.Heads {
			if h.Seq > heads[h.Tenant].Seq {
				heads[h.Tenant] = h
			}
		}
		prev = c.Hash
	}
	return anchors, heads, nil
}

// Verify checks the checkpoint chain, then walks every tenant's chain
// from its sealed anchor (or the start), checks that every head a
// checkpoint sealed is still there, and returns how many events it checked
// and the first *ChainError, if any. It reads each event once (linear in
// the chain's length) and may run on a live database: events appended
// while it runs are verified too, against the head as it is then.
//
// checkSig, if set, also checks each checkpoint's signature.
func Verify(ctx context.Context, r Reader, key []byte, checkSig func(storage.Checkpoint) error) (int, error) {
	cps, anchorRows, err := r.AuditCheckpoints(ctx)
	if err != nil {
		return 0, err
	}
	sealedAnchors, sealedHeads, err := verifyCheckpoints(cps, key, checkSig)
	if err != nil {
		return 0, err
	}
	anchors := map[string]storage.AuditHead{}
	for _, a := range anchorRows {
		s, ok := sealedAnchors[a.TenantID]
		if !ok || s.Seq != a.Seq || s.Hash != hex.EncodeToString(a.Hash) {
			return 0, &ChainError{TenantID: a.TenantID, Seq: a.Seq, Reason: "the prune anchor does not match any sealed checkpoint"}
		}
		anchors[a.TenantID] = a
	}
	heads, err := r.AuditHeads(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, h := range heads {
		v := NewChainVerifier(key, h.TenantID)
		if a, ok := anchors[h.TenantID]; ok {
			v.seq, v.prev = a.Seq, a.Hash
		}
		sealed := sealedHeads[h.TenantID]
		if err := walk(ctx, r, v, sealed, &n); err != nil {
			return n, err
		}
		// Events appended while this ran (a live database) lie beyond the
		// head read at the start; the head of now must account for them.
		// An event beyond every head is an insertion: End reports it.
		for tries := 0; v.seq > h.Seq && tries < 10; tries++ {
			cur, err := currentHead(ctx, r, h.TenantID)
			if err != nil {
				return n, err
			}
			if cur.Seq < v.seq {
				break
			}
			h = cur
			if err := walk(ctx, r, v, sealed, &n); err != nil {
				return n, err
			}
		}
		if err := v.End(h); err != nil {
			return n, err
		}
		if sealed.Seq > v.seq {
			return n, &ChainError{TenantID: h.TenantID, Seq: v.seq + 1, ID: v.lastID,
				Reason: fmt.Sprintf("a checkpoint sealed seq %d but the chain ends at seq %d: events at the end were deleted", sealed.Seq, v.seq)}
		}
	}
	return n, nil
}

// walk verifies the events of v's tenant after the last one it checked.
// Each event is read once, a page at a time by the (tenant, seq) index.
func walk(ctx context.Context, r Reader, v *ChainVerifier, sealed sealedHead, n *int) error {
	for {
		evs, err := r.AuditChain(ctx, v.tenant, v.seq, 1000)
		if err != nil {
			return err
		}
		for i := range evs {
			if err := v.Next(&evs[i]); err != nil {
				return err
			}
			if evs[i].Seq == sealed.Seq && hex.EncodeToString(evs[i].Hash) != sealed.Hash {
				return &ChainError{TenantID: v.tenant, Seq: sealed.Seq, ID: evs[i].ID, Reason: "differs from the head a checkpoint sealed"}
			}
			*n++
		}
		if len(evs) < 1000 {
			return nil
		}
	}
}

// currentHead re-reads one tenant's head.
func currentHead(ctx context.Context, r Reader, tenant string) (storage.AuditHead, error) {
	heads, err := r.AuditHeads(ctx)
	if err != nil {
		return storage.AuditHead{}, err
	}
	for _, h := range heads {
		if h.TenantID == tenant {
			return h, nil
		}
	}
	return storage.AuditHead{TenantID: tenant}, nil
}
