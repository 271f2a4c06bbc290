package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/actas/actas/internal/engineer"
)

var supportCommands = []command{
	{name: "login", summary: "sign in at the support IdP (browser, loopback redirect)", example: "actas support login --broker https://actas.example", run: supportLogin},
	{name: "redeem", summary: "exchange a customer's support code for tokens", example: "actas support redeem --tenant acme --code 123456", run: supportRedeem},
	{name: "token", summary: "print a fresh access token, refreshed as needed", example: `curl -H "Authorization: DPoP $(actas support token)" -H "DPoP: $(actas support proof --url https://product.example/api)" https://product.example/api`, run: supportToken},
	{name: "proof", summary: "print a DPoP proof for one request with the token", example: "actas support proof --method POST --url https://product.example/api/items", run: supportProof},
	{name: "status", summary: "cached sign-in and grants: who, role, expiry", example: "actas support status", run: supportStatus},
	{name: "logout", summary: "end every cached grant at the broker, delete the cache", example: "actas support logout", run: supportLogout},
}

// supportFlags adds --broker to fs and returns the client for it, after
// parsing args.
func supportClient(name, synopsis string, args []string, stderr io.Writer, more func(fs *flag.FlagSet)) (*engineer.Client, error) {
	fs := newFlags("support "+name, "[--broker URL] "+synopsis, stderr)
	broker := fs.String("broker", os.Getenv("ACTAS_BROKER"), "the broker's URL (default $ACTAS_BROKER)")
	if more != nil {
		more(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "actas support %s: unexpected argument %q\n", name, fs.Arg(0))
		fs.Usage()
		return nil, errUsage
	}
	b, err := engineer.CheckBroker(*broker)
	if err != nil {
		return nil, err
	}
	dir, err := engineer.Dir()
	if err != nil {
		return nil, err
	}
	return &engineer.Client{Broker: b, Dir: dir, HTTP: &http.Client{Timeout: 30 * time.Second}, Stderr: stderr, OpenBrowser: openBrowser}, nil
}

// supportErr prints an engineer error as one line and turns it into its
// exit status; usage errors also exit 2.
func supportErr(name string, err error, stderr io.Writer) error {
	var ee *engineer.Error
	if err == nil || !errors.As(err, &ee) {
		return err
	}
	fmt.Fprintf(stderr, "actas support %s: %s\n", name, ee.Msg)
	return exitError{ee.Code}
}

func supportLogin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var noBrowser *bool
	var timeout *time.Duration
	cl, err := supportClient("login", "[--no-browser] [--timeout 5m]", args, stderr, func(fs *flag.FlagSet) {
		noBrowser = fs.Bool("no-browser", false, "print the sign-in URL on stderr instead of opening a browser")
		timeout = fs.Duration("timeout", 5*time.Minute, "how long to wait for the sign-in")
	})
	if err != nil {
		return supportErr("login", err, stderr)
	}
	l, err := cl.Login(ctx, engineer.LoginOptions{NoBrowser: *noBrowser, Timeout: *timeout})
	if err != nil {
		return supportErr("login", err, stderr)
	}
	who := l.Subject
	if l.Email != "" {
		who = l.Email
	}
	fmt.Fprintf(stderr, "Signed in as %s; the sign-in is good until %s.\n", who, when(l.Expiry))
	return nil
}

func supportRedeem(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o engineer.RedeemOptions
	cl, err := supportClient("redeem", "--tenant T --code CODE [--audience A] [--no-dpop]", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&o.Tenant, "tenant", "", "the customer's tenant (required)")
		fs.StringVar(&o.Code, "code", "", "the support code the customer gave you (required)")
		fs.StringVar(&o.Audience, "audience", "", "the product the token is for (default: the CLI client's)")
		fs.BoolVar(&o.NoDPoP, "no-dpop", false, "get a bearer token instead of a DPoP-bound one")
	})
	if err == nil && (o.Tenant == "" || o.Code == "") {
		err = &engineer.Error{Code: engineer.ExitUsage, Msg: "--tenant and --code are required"}
	}
	if err != nil {
		return supportErr("redeem", err, stderr)
	}
	g, err := cl.Redeem(ctx, o)
	if err != nil {
		return supportErr("redeem", err, stderr)
	}
	fmt.Fprintf(stderr, "Acting as %s in tenant %s: role %s, environments %s, until %s.\nGrant %s. Every action is recorded in the customer's audit log.\n",
		g.Subject, g.Tenant, strings.Join(g.Roles, ","), strings.Join(g.Environments, ","), when(g.GrantExpiry), g.ID)
	return nil
}

func grantFlags(id, tenant *string) func(fs *flag.FlagSet) {
	return func(fs *flag.FlagSet) {
		fs.StringVar(id, "grant", "", "the grant (default: the only one, or the only one of --tenant)")
		fs.StringVar(tenant, "tenant", "", "the tenant whose grant to use")
	}
}

func supportToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var id, tenant string
	cl, err := supportClient("token", "[--tenant T | --grant ID]", args, stderr, grantFlags(&id, &tenant))
	if err != nil {
		return supportErr("token", err, stderr)
	}
	tok, err := cl.Token(ctx, id, tenant)
	if err != nil {
		return supportErr("token", err, stderr)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func supportProof(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var id, tenant, method, target string
	cl, err := supportClient("proof", "--url URL [--method GET] [--tenant T | --grant ID]", args, stderr, func(fs *flag.FlagSet) {
		grantFlags(&id, &tenant)(fs)
		fs.StringVar(&method, "method", http.MethodGet, "the request's HTTP method")
		fs.StringVar(&target, "url", "", "the request's URL (required)")
	})
	if err == nil && target == "" {
		err = &engineer.Error{Code: engineer.ExitUsage, Msg: "--url is required"}
	}
	if err != nil {
		return supportErr("proof", err, stderr)
	}
	p, err := cl.Proof(ctx, id, tenant, method, target)
	if err != nil {
		return supportErr("proof", err, stderr)
	}
	fmt.Fprintln(stdout, p)
	return nil
}

func supportStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cl, err := supportClient("status", "", args, stderr, nil)
	if err != nil {
		return supportErr("status", err, stderr)
	}
	c, err := cl.Status()
	if err != nil {
		return supportErr("status", err, stderr)
	}
	fmt.Fprintf(stdout, "Broker:  %s\n", c.Broker)
	if c.Login != nil {
		who := c.Login.Subject
		if c.Login.Email != "" {
			who += " (" + c.Login.Email + ")"
		}
		state := "valid until " + when(c.Login.Expiry)
		if !time.Now().Before(c.Login.Expiry) {
			state = "expired " + when(c.Login.Expiry) + ": run 'actas support login' before redeeming"
		}
		fmt.Fprintf(stdout, "Signed in as %s at %s, %s\n", who, c.Support.Issuer, state)
	}
	if len(c.Grants) == 0 {
		fmt.Fprintln(stdout, "\nNo grants. Redeem one: actas support redeem --tenant T --code CODE")
		return nil
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tGRANT\tACTING AS\tROLE\tENVIRONMENTS\tAUDIENCE\tTOKEN\tGRANT ENDS")
	for _, g := range c.Grants {
		kind := "bearer"
		if g.DPoP {
			kind = "DPoP"
		}
		tok := kind + ", expires " + when(g.Expiry)
		if !time.Now().Before(g.Expiry) {
			tok = kind + ", expired (refreshed on use)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Tenant, g.ID, g.Subject, strings.Join(g.Roles, ","),
			strings.Join(g.Environments, ","), g.Audience, tok, when(g.GrantExpiry))
	}
	return tw.Flush()
}

func supportLogout(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var force *bool
	cl, err := supportClient("logout", "[--force]", args, stderr, func(fs *flag.FlagSet) {
		force = fs.Bool("force", false, "delete the cache even if the broker cannot end the grants")
	})
	if err != nil {
		return supportErr("logout", err, stderr)
	}
	n, err := cl.Logout(ctx, *force)
	if err != nil {
		return supportErr("logout", err, stderr)
	}
	fmt.Fprintf(stderr, "Ended %d grant(s) at the broker and deleted the local cache.\n", n)
	return nil
}

// when is a time both absolute and relative: "2026-11-23 14:05 UTC (in 12m)".
func when(t time.Time) string {
	d := time.Until(t).Round(time.Second)
	rel := "in " + d.String()
	if d < 0 {
		rel = (-d).String() + " ago"
	}
	return t.UTC().Format("2006-01-02 15:04 MST") + " (" + rel + ")"
}

// openBrowser opens url with $BROWSER (the first of its colon-separated
// commands; "%s" in it is replaced by the URL, else the URL is the last
// argument), or the platform's opener.
func openBrowser(url string) error {
	if b := os.Getenv("BROWSER"); b != "" {
		args := strings.Fields(strings.Split(b, ":")[0])
		if len(args) == 0 {
			return errors.New("BROWSER names no command")
		}
		found := false
		for i, a := range args {
			if strings.Contains(a, "%s") {
				args[i], found = strings.ReplaceAll(a, "%s", url), true
			}
		}
		if !found {
			args = append(args, url)
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd.Start()
	}
	switch runtime.GOOS {
	case "darwin":
		return exec.Command("open", url).Start()
	case "windows":
		return exec.Command("rundll32", "url.dll,FileProtocolHandler", url).Start()
	}
	return exec.Command("xdg-open", url).Start()
}
