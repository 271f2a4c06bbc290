package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/actas/actas/examples"
	"github.com/actas/actas/policy"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "", stderr)
	keep := fs.Bool("keep", false, "keep the temporary directory with the SQLite file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	dir, err := os.MkdirTemp("", "actas-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	env, err := newDevEnv(ln.Addr().String(), "sqlite://"+filepath.Join(dir, "actas.db"), false)
	if err != nil {
		ln.Close()
		return err
	}
	defer env.Close()
	pol, err := policy.Parse("examples/policy.yaml", examples.Policy)
	if err != nil {
		ln.Close()
		return err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := wire(ctx, env.cfg, pol, log, prometheus.NewRegistry())
	if err != nil {
		ln.Close()
		return err
	}
	defer a.Close()
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- a.server.Run(sctx, ln) }()
	defer func() { stop(); <-served }()

	d := &demo{w: stdout, base: env.cfg.Issuer, hc: &http.Client{Timeout: 10 * time.Second}}
	fmt.Fprintf(stdout, "actas demo — broker at %s, SQLite at %s\n", d.base, filepath.Join(dir, "actas.db"))
	return d.story(env)
}

type demo struct {
	w    io.Writer
	base string
	hc   *http.Client
	n    int
}

func (d *demo) step(title string) {
	d.n++
	fmt.Fprintf(d.w, "\n%d. %s\n", d.n, title)
}

func (d *demo) call(method, path, bearer string, body io.Reader, ctype string, basic [2]string) (int, []byte, error) {
	req, err := http.NewRequest(method, d.base+path, body)
	if err != nil {
		return 0, nil, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if basic[0] != "" {
		req.SetBasicAuth(url.QueryEscape(basic[0]), url.QueryEscape(basic[1]))
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	fmt.Fprintf(d.w, "   %s %s -> %d\n", method, path, resp.StatusCode)
	return resp.StatusCode, b, err
}

func (d *demo) show(b []byte) {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return
	}
	out, _ := json.MarshalIndent(v, "   ", "  ")
	fmt.Fprintf(d.w, "   %s\n", out)
}

func expect(status, want int, b []byte) error {
	if status != want {
		return fmt.Errorf("expected HTTP %d, got %d: %s", want, status, b)
	}
	return nil
}

// story tells the demo from toggle to revocation, one printed step after
// another; it is a script, so it stays one function.
func (d *demo) story(env *devEnv) error {
	admin := env.customer.Mint(devAdmin, "actas", time.Hour, devAdminClaims())
	engineer := env.support.Mint(devEngineer, "actas", time.Hour, devEngineerClaims())
	product := [2]string{devProductClient, env.productSecret}
	const jsonType, formType = "application/json", "application/x-www-form-urlencoded"

	d.step("Ada, tenant admin of acme, turns support access on")
	st, b, err := d.call("PUT", "/api/v1/tenants/acme/support-access", admin, strings.NewReader(`{"enabled": true}`), jsonType, [2]string{})
	if err != nil || expect(st, 200, b) != nil {
		return firstErr(err, expect(st, 200, b))
	}
	d.show(b)

	d.step("Ada grants the support team `admin` on `production` for one hour")
	st, b, err = d.call("POST", "/api/v1/tenants/acme/grants", admin,
		strings.NewReader(`{"role": "admin", "environments": ["production"], "expires_in": 3600, "ticket": "ZD-4711"}`), jsonType, [2]string{})
	if err != nil || expect(st, 201, b) != nil {
		return firstErr(err, expect(st, 201, b))
	}
	var created struct {
		Grant struct {
			ID string `json:"id"`
		} `json:"grant"`
		Code string `json:"code"`
	}
	json.Unmarshal(b, &created)
	d.show(b)
	fmt.Fprintf(d.w, "   Ada reads the one-time support code %s to the engineer; actas stored only its HMAC.\n", created.Code)

	d.step("Alice, signed in at the support IdP, redeems tenant + code (RFC 8693 token exchange)")
	form := url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "client_id": {devCLIClient},
		"tenant": {"acme"}, "subject_token": {created.Code}, "subject_token_type": {"urn:actas:params:oauth:token-type:support-code"},
		"actor_token": {engineer}, "actor_token_type": {"urn:ietf:params:oauth:token-type:id_token"},
	}
	st, b, err = d.call("POST", "/token", "", strings.NewReader(form.Encode()), formType, [2]string{})
	if err != nil || expect(st, 200, b) != nil {
		return firstErr(err, expect(st, 200, b))
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal(b, &tok)
	d.show(redactTokens(b))

	d.step("The access token's claims: subject = Ada, actor = Alice")
	parts := strings.Split(tok.AccessToken, ".")
	if len(parts) == 3 {
		if hdr, err := base64.RawURLEncoding.DecodeString(parts[0]); err == nil {
			fmt.Fprintf(d.w, "   header: %s\n", hdr)
		}
		if payload, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			d.show(payload)
		}
	}

	d.step("The same code a second time is refused (single use)")
	st, b, err = d.call("POST", "/token", "", strings.NewReader(form.Encode()), formType, [2]string{})
	if err != nil || expect(st, 400, b) != nil {
		return firstErr(err, expect(st, 400, b))
	}
	d.show(b)

	introspect := func() error {
		st, b, err := d.call("POST", "/introspect", "", strings.NewReader(url.Values{"token": {tok.AccessToken}}.Encode()), formType, product)
		if err != nil || expect(st, 200, b) != nil {
			return firstErr(err, expect(st, 200, b))
		}
		d.show(b)
		return nil
	}
	d.step("The product introspects the token (RFC 7662): active, re-checked in storage")
	if err := introspect(); err != nil {
		return err
	}

	d.step("Ada terminates the grant")
	st, b, err = d.call("DELETE", "/api/v1/tenants/acme/grants/"+created.Grant.ID, admin, nil, "", [2]string{})
	if err != nil || expect(st, 204, b) != nil {
		return firstErr(err, expect(st, 204, b))
	}

	d.step("The next introspection answers inactive, though the JWT itself has not expired")
	if err := introspect(); err != nil {
		return err
	}

	d.step("The audit log, newest first")
	st, b, err = d.call("GET", "/api/v1/tenants/acme/audit", admin, nil, "", [2]string{})
	if err != nil || expect(st, 200, b) != nil {
		return firstErr(err, expect(st, 200, b))
	}
	var audit struct {
		Events []struct {
			Time      time.Time `json:"time"`
			ActorType string    `json:"actor_type"`
			ActorID   string    `json:"actor_id"`
			Action    string    `json:"action"`
			Outcome   string    `json:"outcome"`
		} `json:"events"`
	}
	json.Unmarshal(b, &audit)
	for _, e := range audit.Events {
		fmt.Fprintf(d.w, "   %s  %-16s %-6s %-22s %s\n", e.Time.Format("15:04:05.000"), e.ActorType, e.ActorID, e.Action, e.Outcome)
	}
	fmt.Fprintln(d.w, "\ndone.")
	return nil
}

// redactTokens shortens tokens in a response for display.
func redactTokens(b []byte) []byte {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return b
	}
	for _, k := range []string{"access_token", "refresh_token"} {
		if s, ok := m[k].(string); ok && len(s) > 24 {
			m[k] = s[:24] + "…"
		}
	}
	out, _ := json.Marshal(m)
	return bytes.TrimSpace(out)
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
