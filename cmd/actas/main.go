// Command actas is the OIDC impersonation broker: one binary for the
// server, its storage, policy and key tooling, and a demo.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/actas/actas/internal/suggest"
)

// command is a subcommand, or a group of them (sub).
type command struct {
	name    string
	summary string
	example string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	sub     []command
}

var commands = []command{
	{name: "serve", summary: "run the broker (without --config: a loopback dev setup)", example: "actas serve --config actas.yaml", run: runServe},
	{name: "demo", summary: "the whole story end to end on a temporary SQLite file", example: "actas demo", run: runDemo},
	{name: "migrate", summary: "apply storage migrations and exit", example: "actas migrate --config actas.yaml", run: runMigrate},
	{name: "policy", summary: "check or explain a policy file", sub: []command{
		{name: "check", summary: "validate policy files; every problem as file:line:col", example: "actas policy check policy.yaml", run: policyCheck},
		{name: "explain", summary: "the decision for a grant, and the rule that made it",
			example: "actas policy explain --policy policy.yaml --granter-role admin --role manage --env production", run: policyExplain},
	}},
	{name: "keys", summary: "list or rotate signing keys", sub: []command{
		{name: "list", summary: "signing keys, their state and dates", example: "actas keys list --config actas.yaml", run: keysList},
		{name: "rotate", summary: "make the published next key current", example: "actas keys rotate --config actas.yaml", run: keysRotate},
	}},
	{name: "audit", summary: "verify or export the audit log", sub: []command{
		{name: "verify", summary: "check every hash chain and the checkpoint chain", example: "actas audit verify --config actas.yaml", run: auditVerify},
		{name: "export", summary: "audit events as JSON lines", example: "actas audit export --config actas.yaml --tenant acme", run: auditExport},
	}},
	{name: "support", summary: "the engineer's client: sign in, redeem codes, use tokens", sub: supportCommands},
	{name: "version", summary: "print the version", example: "actas version", run: runVersion},
}

// errUsage marks misuse: exit status 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		args = []string{"version"}
	}
	err := dispatch(ctx, "actas", commands, args, stdout, stderr)
	var ex exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.As(err, &ex):
		return ex.code
	}
	fmt.Fprintf(stderr, "%s: %v\n", commandPath(args), err)
	return 1
}

// dispatch runs the command args names among cmds, printing help for
// help requests (exit 0) and for a missing or unknown name (exit 2), with
// a suggestion when the name looks like a typo.
func dispatch(ctx context.Context, path string, cmds []command, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		w := stderr
		if len(args) > 0 {
			w = stdout
		}
		usage(w, path, cmds)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range cmds {
		if c.name != args[0] {
			continue
		}
		if c.sub != nil {
			return dispatch(ctx, path+" "+c.name, c.sub, args[1:], stdout, stderr)
		}
		return c.run(ctx, args[1:], stdout, stderr)
	}
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.name
	}
	msg := fmt.Sprintf("%s: unknown command %q", path, args[0])
	if s := suggest.Closest(args[0], names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	fmt.Fprintf(stderr, "%s\n\n", msg)
	usage(stderr, path, cmds)
	return errUsage
}

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" || a == "help" }

// commandPath names the command args ran, for error messages.
func commandPath(args []string) string {
	path, cmds := "actas", commands
	for _, a := range args {
		found := false
		for _, c := range cmds {
			if c.name == a {
				path, cmds, found = path+" "+a, c.sub, true
				break
			}
		}
		if !found || cmds == nil {
			break
		}
	}
	return path
}

// usage lists cmds one per line with an example each, like gh and kubectl.
func usage(w io.Writer, path string, cmds []command) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", path)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
		for _, s := range c.sub {
			fmt.Fprintf(w, "    %-7s %s\n", s.name, s.summary)
		}
	}
	fmt.Fprintln(w, "\nexamples:")
	for _, c := range cmds {
		if c.example != "" {
			fmt.Fprintf(w, "  %s\n", c.example)
		}
		for _, s := range c.sub {
			fmt.Fprintf(w, "  %s\n", s.example)
		}
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for a command's flags.\n", path)
}

// exitError ends a command with a given status after it printed its own
// message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// newFlags makes a flag set that reports misuse as errUsage.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("actas "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: actas %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, mapping flag errors to errUsage and suggesting
// the flag a mistyped one probably meant.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		if bad, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			var names []string
			fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
			if s := suggest.Closest(strings.TrimLeft(bad, "-"), names); s != "" {
				fmt.Fprintf(fs.Output(), "did you mean --%s?\n", s)
			}
		}
		return errUsage
	}
	return nil
}
