package sqlstore

import (
	"context"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

// Redemption is one redemption of a batch made by RedeemBatch.
type Redemption struct {
	P     storage.RedeemParams
	Issue func(storage.Grant, storage.Tenant) (storage.Issue, error)
}

// RedeemBatch makes rs as one batch, as the batcher makes concurrent
// redemptions, and returns each one's outcome and how many of them
// redeemAll made together.
func RedeemBatch(s *Store, rs []Redemption) ([]storage.Grant, []error, int, error) {
	jobs := make([]*batchJob, len(rs))
	for i, r := range rs {
		jobs[i] = s.redemptionJob(r.P, r.Issue)
	}
	results := make([]batchResult, len(jobs))
	var bulk int
	err := s.tx(context.Background(), func(tx *sqlx.Tx) error {
		var err error
		bulk, err = s.batchTx(context.Background(), tx, jobs, results)
		return err
	})
	gs, errs := make([]storage.Grant, len(rs)), make([]error, len(rs))
	for i, r := range results {
		gs[i], errs[i] = r.g, r.err
	}
	return gs, errs, bulk, err
}
