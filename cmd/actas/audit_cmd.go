package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/actas/actas/storage"
)

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "export" {
		fmt.Fprintln(stderr, "usage: actas audit export --config actas.yaml --tenant T [--since RFC3339]")
		return errUsage
	}
	fs := newFlags("audit export", "--config actas.yaml --tenant T [--since RFC3339] [--until RFC3339]", stderr)
	cfgPath := fs.String("config", "", "operator config file (required)")
	tenant := fs.String("tenant", "", "tenant whose events to export (required; \"\" events use --tenant='')")
	since := fs.String("since", "", "only events at or after this time")
	until := fs.String("until", "", "only events before this time")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
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
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	st, _, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
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
