package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

func auditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var tenant, since, until *string
	st, _, err := configStore(ctx, "audit export", "--config actas.yaml --tenant T [--since RFC3339] [--until RFC3339]", args, stderr,
		func(fs *flag.FlagSet) {
			tenant = fs.String("tenant", "", "tenant whose events to export (system events: --tenant '')")
			since = fs.String("since", "", "only events at or after this time")
			until = fs.String("until", "", "only events before this time")
		})
	if err != nil {
		return err
	}
	defer st.Close()
	f := storage.AuditFilter{TenantID: *tenant, Limit: 1000}
	for _, p := range []struct {
		v   string
		dst *time.Time
	}{{*since, &f.Since}, {*until, &f.Until}} {
		if p.v != "" {
			t, err := time.Parse(time.RFC3339, p.v)
			if err != nil {
				fmt.Fprintf(stderr, "actas audit export: %q is not an RFC 3339 time\n", p.v)
				return errUsage
			}
			*p.dst = t
		}
	}
	enc := json.NewEncoder(stdout)
	for {
		evs, err := st.Audit(ctx, f)
		if err != nil {
			return err
		}
		for _, e := range evs {
			enc.Encode(map[string]any{"id": e.ID, "time": e.Time.UTC(), "tenant": e.TenantID, "actor_type": e.ActorType,
				"actor_id": e.ActorID, "actor_iss": e.ActorIss, "action": e.Action, "target": e.Target, "outcome": e.Outcome,
				"detail": json.RawMessage(e.Detail), "policy_sha256": e.PolicySHA256})
		}
		if len(evs) < f.Limit {
			return nil
		}
		f.BeforeID = evs[len(evs)-1].ID
	}
}

// auditVerify walks every tenant's chain and names the first bad event.
func auditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	st, keys, err := configStore(ctx, "audit verify", "--config actas.yaml", args, stderr, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	checkSig, err := audit.CheckpointVerifier(ctx, st)
	if err != nil {
		return err
	}
	n, err := audit.Verify(ctx, st, keys.AuditKey(), checkSig)
	var ce *audit.ChainError
	if errors.As(err, &ce) {
		fmt.Fprintf(stdout, "FAIL after %d good events: %v\n", n, ce)
		return exitError{1}
	}
	if err != nil {
		return err
	}
	heads, err := st.AuditHeads(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ok: %d events in %d chains verify\n", n, len(heads))
	return nil
}
