package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/actas/actas/broker/keys"
)

func keysList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	st, _, err := configStore(ctx, "keys list", "--config actas.yaml", args, stderr, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	keys, err := st.SigningKeys(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tALG\tSTATE\tCREATED\tACTIVATED\tRETIRE AT")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Algorithm, k.State, ts(k.CreatedAt), ts(k.ActivatedAt), ts(k.RetireAt))
	}
	return tw.Flush()
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// keysRotate makes the published next key current. Running servers pick
// the change up on their next key refresh (30s) or on SIGHUP.
func keysRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var force *bool
	cfg, cfgPath, err := configFlag("keys rotate", "--config actas.yaml [--force]", args, stderr, func(fs *flag.FlagSet) {
		force = fs.Bool("force", false, "rotate even if the next key was published less than 2 minutes ago")
	})
	if err != nil {
		return err
	}
	pol, _, err := loadPolicy(cfgPath, cfg)
	if err != nil {
		return err
	}
	st, sk, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	m, err := keys.New(ctx, keys.Config{
		Store: st, KEK: sk.KEK(), Algorithm: cfg.Keys.Algorithm,
		AccessTTL: func() time.Duration { return pol.AccessTTL }, PolicySHA: func() string { return pol.SHA256 },
		ClockSkew: 30 * time.Second, Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	if err := m.Rotate(ctx, *force); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rotated: %s now signs\n", m.KeySet().SigningKeyID())
	return nil
}
