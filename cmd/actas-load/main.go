// Command actas-load measures actas over loopback: it starts the real
// actas binary with a config and two dev identity providers, prepares
// tokens or codes through the HTTP API, then drives introspection or token
// exchange from many keep-alive connections and reports throughput and
// latency per run and the median over runs. Traffic goes only to 127.0.0.1;
// every run is bounded in time or count.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/actas/actas/examples"
	"github.com/actas/actas/internal/devidp"
)

func main() {
	bin := flag.String("actas", "", "path to the actas binary (required)")
	storage := flag.String("storage", "sqlite", `"sqlite" (a fresh file) or a postgres:// URL of an empty database`)
	mode := flag.String("mode", "introspect", "introspect or exchange")
	conns := flag.Int("conns", 32, "concurrent keep-alive connections")
	duration := flag.Duration("duration", 10*time.Second, "introspect: length of one run")
	count := flag.Int("count", 20000, "exchange: redemptions per run")
	runs := flag.Int("runs", 3, "runs; the median is reported")
	tokens := flag.Int("tokens", 256, "introspect: distinct live tokens")
	flag.Parse()
	if *bin == "" || (*mode != "introspect" && *mode != "exchange") || *conns < 1 || *runs < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*bin, *storage, *mode, *conns, *duration, *count, *runs, *tokens); err != nil {
		fmt.Fprintln(os.Stderr, "actas-load:", err)
		os.Exit(1)
	}
}

type env struct {
	base      string
	cust, sup *devidp.IDP
	hc        *http.Client
}

const productSecret = "load-product-secret-0123456789"

// run starts the binary, prepares the mode's data and drives the load
// runs; the steps are sequential and read best in one place.
func run(bin, storage, mode string, conns int, duration time.Duration, count, runs, ntokens int) error {
	dir, err := os.MkdirTemp("", "actas-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cust, err := devidp.Start()
	if err != nil {
		return err
	}
	defer cust.Close()
	sup, err := devidp.Start()
	if err != nil {
		return err
	}
	defer sup.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	if storage == "sqlite" {
		storage = "sqlite://" + filepath.Join(dir, "actas.db")
	}
	cfg := fmt.Sprintf(`issuer: http://%s
listen: %s
storage: %s
policy_file: policy.yaml
support_idp: {issuer: %s, client_id: actas}
customer_idps:
  - {issuer: %s, audience: actas, tenant_claim: org_id, role_claim: role}
clients:
  - {id: cli, audience: product}
  - {id: product, secret_env: LOAD_PRODUCT_SECRET, audience: product, can_introspect: true}
`, addr, addr, storage, sup.Issuer, cust.Issuer)
	if err := os.WriteFile(filepath.Join(dir, "actas.yaml"), []byte(cfg), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), examples.Policy, 0o600); err != nil {
		return err
	}
	cmd := exec.Command(bin, "serve", "--config", filepath.Join(dir, "actas.yaml"))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Env = append(os.Environ(), "LOAD_PRODUCT_SECRET="+productSecret,
		"ACTAS_SECRET_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	e := &env{base: "http://" + addr, cust: cust, sup: sup, hc: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, IdleConnTimeout: time.Minute},
	}}
	if err := e.waitReady(); err != nil {
		return fmt.Errorf("%v\n%s", err, logs.String())
	}
	fmt.Printf("actas-load: %s over loopback, storage %s, %d connections, %d run(s)\n", mode, strings.SplitN(storage, "://", 2)[0], conns, runs)

	var rates []float64
	for r := 1; r <= runs; r++ {
		var res result
		var err error
		if mode == "introspect" {
			res, err = e.introspectRun(conns, duration, ntokens, r)
		} else {
			res, err = e.exchangeRun(conns, count, r)
		}
		if err != nil {
			return fmt.Errorf("run %d: %v\n%s", r, err, tail(logs.String(), 2000))
		}
		fmt.Printf("run %d: %d requests in %.2fs: %.0f/s, p50 %s, p99 %s, errors %d\n",
			r, res.n, res.elapsed.Seconds(), res.rate(), res.p(0.50), res.p(0.99), res.errors)
		if res.errors > 0 {
			return fmt.Errorf("run %d had %d errors; first: %s", r, res.errors, res.firstErr)
		}
		rates = append(rates, res.rate())
	}
	sort.Float64s(rates)
	fmt.Printf("median: %.0f %s/s over %d runs\n", rates[len(rates)/2], mode, runs)
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (e *env) waitReady() error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := e.hc.Get(e.base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("actas did not become ready")
}

func (e *env) call(method, path, bearer, ctype, body string, basic bool) (int, []byte, error) {
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if basic {
		req.SetBasicAuth("product", productSecret)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// prepare enables support for tenant and creates n grants, returning codes.
func (e *env) prepare(tenant string, n, conns int) ([]string, error) {
	admin := e.cust.Mint("admin-"+tenant, "actas", time.Hour, map[string]any{"org_id": tenant, "role": "admin", "plan": "enterprise"})
	if st, b, err := e.call("PUT", "/api/v1/tenants/"+tenant+"/support-access", admin, "application/json", `{"enabled":true}`, false); err != nil || st != 200 {
		return nil, fmt.Errorf("enable %s: %d %s %v", tenant, st, b, err)
	}
	codes := make([]string, n)
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || firstErr.Load() != nil {
					return
				}
				st, b, err := e.call("POST", "/api/v1/tenants/"+tenant+"/grants", admin, "application/json",
					`{"role":"manage","environments":["sandbox"],"expires_in":86400}`, false)
				if err != nil || st != 201 {
					firstErr.CompareAndSwap(nil, fmt.Sprintf("grant: %d %s %v", st, b, err))
					return
				}
				var out struct{ Code string }
				json.Unmarshal(b, &out)
				codes[i] = out.Code
			}
		}()
	}
	wg.Wait()
	if v := firstErr.Load(); v != nil {
		return nil, errors.New(v.(string))
	}
	return codes, nil
}

func exchangeBody(tenant, code, idToken string) string {
	return url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "client_id": {"cli"}, "tenant": {tenant},
		"subject_token": {code}, "subject_token_type": {"urn:actas:params:oauth:token-type:support-code"},
		"actor_token": {idToken}, "actor_token_type": {"urn:ietf:params:oauth:token-type:id_token"},
	}.Encode()
}

type result struct {
	n, errors int
	elapsed   time.Duration
	lat       []time.Duration
	firstErr  string
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r result) p(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[int(q*float64(len(r.lat)-1))].Round(10 * time.Microsecond)
}

// drive runs work from conns workers until next returns false, timing each
// call.
func drive(conns int, next func() (int, bool), work func(i int) error) result {
	var mu sync.Mutex
	var res result
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var errs int
			var first string
			for {
				i, ok := next()
				if !ok {
					break
				}
				t := time.Now()
				if err := work(i); err != nil {
					errs++
					if first == "" {
						first = err.Error()
					}
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.errors += errs
			if res.firstErr == "" {
				res.firstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.n = len(res.lat)
	sort.Slice(res.lat, func(i, j int) bool { return res.lat[i] < res.lat[j] })
	return res
}

func (e *env) introspectRun(conns int, d time.Duration, ntokens, run int) (result, error) {
	tenant := fmt.Sprintf("intro-%d", run)
	codes, err := e.prepare(tenant, ntokens, conns)
	if err != nil {
		return result{}, err
	}
	eng := e.sup.Mint("engineer", "actas", time.Hour, map[string]any{"groups": []string{"support"}})
	bodies := make([]string, len(codes))
	for i, c := range codes {
		st, b, err := e.call("POST", "/token", "", "application/x-www-form-urlencoded", exchangeBody(tenant, c, eng), false)
		if err != nil || st != 200 {
			return result{}, fmt.Errorf("exchange: %d %s %v", st, b, err)
		}
		var out struct {
			AccessToken string `json:"access_token"`
		}
		json.Unmarshal(b, &out)
		bodies[i] = url.Values{"token": {out.AccessToken}}.Encode()
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var n atomic.Int64
	next := func() (int, bool) {
		if ctx.Err() != nil {
			return 0, false
		}
		return int(n.Add(1)), true
	}
	return drive(conns, next, func(i int) error {
		st, b, err := e.call("POST", "/introspect", "", "application/x-www-form-urlencoded", bodies[i%len(bodies)], true)
		if err != nil {
			return err
		}
		if st != 200 || !bytes.HasPrefix(b, []byte(`{"active":true`)) {
			return fmt.Errorf("introspect: %d %s", st, b)
		}
		return nil
	}), nil
}

func (e *env) exchangeRun(conns, count, run int) (result, error) {
	// Spread codes over tenants as real traffic would be.
	const tenants = 8
	type job struct{ tenant, code string }
	var jobs []job
	for t := 0; t < tenants; t++ {
		tenant := fmt.Sprintf("ex-%d-%d", run, t)
		codes, err := e.prepare(tenant, count/tenants, conns)
		if err != nil {
			return result{}, err
		}
		for _, c := range codes {
			jobs = append(jobs, job{tenant, c})
		}
	}
	engs := make([]string, conns)
	for i := range engs {
		engs[i] = e.sup.Mint(fmt.Sprintf("engineer-%d", i), "actas", time.Hour, map[string]any{"groups": []string{"support"}})
	}
	var n atomic.Int64
	next := func() (int, bool) {
		i := int(n.Add(1) - 1)
		return i, i < len(jobs)
	}
	return drive(conns, next, func(i int) error {
		j := jobs[i]
		st, b, err := e.call("POST", "/token", "", "application/x-www-form-urlencoded", exchangeBody(j.tenant, j.code, engs[i%len(engs)]), false)
		if err != nil {
			return err
		}
		if st != 200 {
			return fmt.Errorf("exchange: %d %s", st, b)
		}
		return nil
	}), nil
}
