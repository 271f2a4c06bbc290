package sqlstore

import (
	"context"
	"maps"
	"slices"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

// txState is what one write transaction remembers between its
// statements: the audit chain heads it has advanced, written once just
// before commit instead of after every event; what it read to address
// notifications; and whether it queued outbox messages. tryTx creates it;
// it lives as long as the transaction. A group commit of 64 redemptions
// thus reads each tenant's head and notification settings once.
type txState struct {
	queued bool
	heads  map[string]chainHead // by tenant
	// notify is each tenant's notification settings and admins as read
	// in this transaction; a write to either forgets the tenant's entry.
	notify map[string]*recipients
	// granters are the granter claims of the grants this transaction
	// redeemed, by grant id.
	granters map[string][]byte
}

// recipients is what enqueue reads of a tenant.
type recipients struct {
	settings storage.NotificationSettings
	admins   []string
	adminsOK bool // admins read
}

// chainHead is a tenant's audit chain head as this transaction sees it.
type chainHead struct {
	seq   int64
	hash  []byte
	dirty bool // advanced here, not yet written
}

// state returns tx's state. Every write transaction has one: tryTx is
// the only place that begins them.
func (s *Store) state(tx *sqlx.Tx) *txState {
	v, _ := s.txs.Load(tx)
	return v.(*txState)
}

// queued marks tx as having queued outbox messages.
func (s *Store) queued(tx *sqlx.Tx) { s.state(tx).queued = true }

// flushHeads writes the chain heads tx advanced. tryTx calls it before
// commit, and anything that reads audit_heads inside a transaction calls
// it first. The rows are already locked by this transaction (insertAudit's
// upsert), so the writes wait for nobody.
func (s *Store) flushHeads(ctx context.Context, tx *sqlx.Tx) error {
	st := s.state(tx)
	var args []any
	for _, tenant := range slices.Sorted(maps.Keys(st.heads)) {
		if h := st.heads[tenant]; h.dirty {
			args = append(args, tenant, h.seq, h.hash)
		}
	}
	if len(args) == 0 {
		return nil
	}
	// One statement for every tenant: the rows exist (readHeads), so
	// each insert is an update.
	if _, err := s.exec(ctx, tx, `INSERT INTO audit_heads (tenant_id, seq, hash) VALUES `+values(3, len(args)/3)+`
		ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`, args...); err != nil {
		return err
	}
	for tenant, h := range st.heads {
		h.dirty = false
		st.heads[tenant] = h
	}
	return nil
}

// headsAt returns a copy of the heads tx holds, for restoreHeads after a
// rollback to a savepoint taken now.
func (s *Store) headsAt(tx *sqlx.Tx) map[string]chainHead { return maps.Clone(s.state(tx).heads) }

// restoreHeads forgets what tx learnt of the heads since headsAt: the
// statements behind it were rolled back, on PostgreSQL with their row locks.
func (s *Store) restoreHeads(tx *sqlx.Tx, heads map[string]chainHead) { s.state(tx).heads = heads }

// forgetRecipients drops what tx read of tenant's notification settings
// and admins; the writers of either call it.
func (s *Store) forgetRecipients(tx *sqlx.Tx, tenant string) { delete(s.state(tx).notify, tenant) }
