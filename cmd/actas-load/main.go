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
	"strconv"
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
	compare := flag.Bool("compare", false, "introspect: after each run, drive a trivial Go handler (a process of its own) the same way, and print the ratio")
	profile := flag.String("cpuprofile", "", "write actas's CPU profile (actas serve --cpuprofile) to this file")
	scale := flag.Int("scale", 0, "before the runs, fill storage with this many grants (10 tokens and 5 audit events each) through actas's storage code")
	rate := flag.Int("rate", 0, "introspect with the go tool: offer this many requests per second (open loop) instead of as many as the connections can carry; latency counts from each request's scheduled time")
	tool := flag.String("tool", "go", `introspect: the load generator, "go" (this command's own client) or "wrk" (on PATH)`)
	logFile := flag.String("actas-log", "", "also write actas's log (JSON lines, with each request's duration) to this file")
	trivial := flag.String("trivial-serve", "", "(internal) serve the trivial handler on this address")
	flag.Parse()
	if *trivial != "" {
		serveTrivial(*trivial)
		return
	}
	if *bin == "" || (*mode != "introspect" && *mode != "exchange") || *conns < 1 || *runs < 1 || *scale < 0 || *rate < 0 || (*tool != "go" && *tool != "wrk") || (*rate > 0 && (*tool != "go" || *mode != "introspect")) {
		flag.Usage()
		os.Exit(2)
	}
	o := options{bin: *bin, storage: *storage, mode: *mode, conns: *conns, duration: *duration, count: *count, runs: *runs,
		tokens: *tokens, compare: *compare, profile: *profile, scale: *scale, tool: *tool, rate: *rate, logFile: *logFile}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "actas-load:", err)
		os.Exit(1)
	}
}

type env struct {
	base      string
	cust, sup *devidp.IDP
	hc        *http.Client
	pid       int    // actas's
	tool      string // "go" or "wrk"
	// tag makes this invocation's tenants its own: a tenant is bound to
	// the identity provider that enabled it, and each invocation starts a
	// new one, so a PostgreSQL database can be used again.
	tag string
	// postgres: storage is a PostgreSQL server on this machine, whose CPU
	// time each run reports.
	postgres bool
}

const productSecret = "load-product-secret-0123456789"

// options are the command's flags.
type options struct {
	bin, storage, mode, profile string
	logFile                     string
	tool                        string
	conns, count, runs, tokens  int
	scale, rate                 int
	duration                    time.Duration
	compare                     bool
}

// run starts the binary, prepares the mode's data and drives the load
// runs; the steps are sequential and read best in one place.
func run(o options) error {
	bin, storage, mode, conns, duration, count, runs, ntokens := o.bin, o.storage, o.mode, o.conns, o.duration, o.count, o.runs, o.tokens
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
	if o.scale > 0 {
		if err := seed(storage, o.scale); err != nil {
			return err
		}
	}
	args := []string{"serve", "--config", filepath.Join(dir, "actas.yaml")}
	if o.profile != "" {
		args = append(args, "--cpuprofile", o.profile)
	}
	cmd := exec.Command(bin, args...)
	// Only the log's tail is kept, for error messages: a line per request
	// kept whole grew without bound, and copying it as it grew stalled
	// this process during the runs it measures.
	logs := &tailBuffer{max: 64 << 10}
	var out io.Writer = logs
	if o.logFile != "" {
		f, err := os.Create(o.logFile)
		if err != nil {
			return err
		}
		defer f.Close()
		out = io.MultiWriter(logs, f)
	}
	cmd.Stdout, cmd.Stderr = out, out // one value: os/exec then writes from one goroutine at a time
	cmd.Env = append(os.Environ(), "LOAD_PRODUCT_SECRET="+productSecret,
		"ACTAS_SECRET_KEY="+rootSecret)
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	e := &env{base: "http://" + addr, cust: cust, sup: sup, pid: cmd.Process.Pid, tool: o.tool, tag: strconv.FormatInt(time.Now().UnixMilli(), 36),
		postgres: localPostgres(storage), hc: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, IdleConnTimeout: time.Minute},
		}}
	if err := e.waitReady(); err != nil {
		return fmt.Errorf("%v\n%s", err, logs)
	}
	fmt.Printf("actas-load: %s over loopback, storage %s, %d connections, %d run(s), load by %s\n", mode, strings.SplitN(storage, "://", 2)[0], conns, runs, o.tool)
	if o.rate > 0 {
		fmt.Printf("actas-load: open loop, %d requests/s offered\n", o.rate)
	}

	var cmp *trivialServer
	if o.compare {
		if cmp, err = startTrivial(conns, o.tool); err != nil {
			return err
		}
		defer cmp.stop()
	}
	var rates, ratios, trivials, p50s, p99s []float64
	for r := 1; r <= runs; r++ {
		var res result
		var err error
		cpu0 := cpuTime(cmd.Process.Pid)
		if mode == "introspect" {
			res, err = e.introspectRun(conns, duration, ntokens, r, o.rate)
		} else {
			res, err = e.exchangeRun(conns, count, r)
		}
		if err != nil {
			return fmt.Errorf("run %d: %v\n%s", r, err, tail(logs.String(), 2000))
		}
		cpu := (cpuTime(cmd.Process.Pid) - cpu0 - res.setupCPU) / time.Duration(max(res.n, 1))
		client := ""
		if res.clientCPU > 0 {
			client = fmt.Sprintf(" (load client %s)", (res.clientCPU / time.Duration(max(res.n, 1))).Round(time.Microsecond))
		}
		fmt.Printf("run %d: %d requests in %.2fs: %.0f/s, p50 %s, p99 %s, actas CPU %s/request%s, errors %d\n",
			r, res.n, res.elapsed.Seconds(), res.rate(), res.p(0.50), res.p(0.99), cpu.Round(time.Microsecond), client, res.errors)
		if res.postgresCPU > 0 {
			fmt.Printf("run %d: PostgreSQL server CPU %s/request\n", r, (res.postgresCPU / time.Duration(max(res.n, 1))).Round(time.Microsecond))
		}
		if res.writes.calls > 0 {
			fmt.Printf("run %d: actas wrote %.1f KiB in %.1f write calls per request\n",
				r, float64(res.writes.bytes)/1024/float64(res.n), float64(res.writes.calls)/float64(res.n))
		}
		if res.errors > 0 {
			return fmt.Errorf("run %d had %d errors; first: %s", r, res.errors, res.firstErr)
		}
		rates = append(rates, res.rate())
		p50s, p99s = append(p50s, float64(res.p(0.50))), append(p99s, float64(res.p(0.99)))
		if cmp != nil {
			tr, err := cmp.run(conns, duration, o.rate)
			if err != nil {
				return err
			}
			fmt.Printf("run %d, trivial handler: %.0f/s, p50 %s, p99 %s: actas at %.0f%% of it\n",
				r, tr.rate(), tr.p(0.50), tr.p(0.99), 100*res.rate()/tr.rate())
			ratios, trivials = append(ratios, res.rate()/tr.rate()), append(trivials, tr.rate())
		}
	}
	fmt.Printf("median: %.0f %s/s over %d runs, p50 %s, p99 %s\n", median(rates), mode, runs,
		time.Duration(median(p50s)).Round(10*time.Microsecond), time.Duration(median(p99s)).Round(10*time.Microsecond))
	if cmp != nil {
		fmt.Printf("median: trivial handler %.0f/s; actas at %.0f%% of it\n", median(trivials), 100*median(ratios))
	}
	return nil
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
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
	// setupCPU is actas's CPU time spent preparing the run (grants and
	// exchanges), taken off its CPU per request.
	setupCPU time.Duration
	// clientCPU is this command's own CPU time during the run (0 when
	// another tool drove it): it shares the machine with actas.
	clientCPU time.Duration
	// writes is what actas wrote during the run, where measured: for an
	// exchange, mostly the storage's durable writes.
	writes ioCount
	// postgresCPU is the PostgreSQL server's CPU time during the run (0
	// unless storage is a server on this machine).
	postgresCPU time.Duration
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r result) p(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[int(q*float64(len(r.lat)-1))].Round(10 * time.Microsecond)
}

// drive runs work from conns workers until next returns false, timing each
// call: from when it is due, if due is set (the worker waits until then),
// else from when it starts.
func drive(conns int, next func() (int, bool), due func(int) time.Time, work func(i int) error) result {
	var mu sync.Mutex
	var res result
	cpu0 := cpuTime(os.Getpid())
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
				if due != nil {
					t = due(i)
					time.Sleep(time.Until(t))
				}
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
	res.clientCPU = cpuTime(os.Getpid()) - cpu0
	res.n = len(res.lat)
	sort.Slice(res.lat, func(i, j int) bool { return res.lat[i] < res.lat[j] })
	return res
}

func (e *env) introspectRun(conns int, d time.Duration, ntokens, run, rate int) (result, error) {
	cpu0 := cpuTime(e.pid)
	tenant := fmt.Sprintf("intro-%s-%d", e.tag, run)
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
	setup := cpuTime(e.pid) - cpu0
	res, err := e.load(conns, d, rate, bodies, `{"active":true`)
	res.setupCPU += setup
	return res, err
}

// load drives introspection calls with bodies for d, after a second of the
// same load that is not counted: the connections are open, the database
// pool has grown and each token's first use (an audit event, written
// once) is behind it, as in a server that has been up for a while.
// Without it the first half second of a PostgreSQL run held every call
// slower than 50 ms, and wrk's p99 reported that.
func (e *env) load(conns int, d time.Duration, rate int, bodies []string, want string) (result, error) {
	cpu0 := cpuTime(e.pid)
	if _, err := e.loadFor(conns, time.Second, rate, bodies, want); err != nil {
		return result{}, err
	}
	warm, pg0 := cpuTime(e.pid)-cpu0, e.postgresCPU()
	res, err := e.loadFor(conns, d, rate, bodies, want)
	res.setupCPU += warm
	res.postgresCPU = e.postgresCPU() - pg0
	return res, err
}

func (e *env) loadFor(conns int, d time.Duration, rate int, bodies []string, want string) (result, error) {
	if e.tool == "wrk" {
		return wrkRun(e.base, conns, d, bodies)
	}
	return e.introspectLoad(conns, d, rate, bodies, want), nil
}

// introspectLoad drives introspection calls with bodies for d; each answer
// must start with want. With rate > 0 the calls are offered at that rate
// (open loop): call i is due at start + i/rate, and its latency counts from
// then, so a call that waited for a free connection counts its wait.
func (e *env) introspectLoad(conns int, d time.Duration, rate int, bodies []string, want string) result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var n atomic.Int64
	next := func() (int, bool) {
		if ctx.Err() != nil {
			return 0, false
		}
		return int(n.Add(1)), true
	}
	call := func(i int) error {
		st, b, err := e.call("POST", "/introspect", "", "application/x-www-form-urlencoded", bodies[i%len(bodies)], true)
		if err != nil {
			return err
		}
		if st != 200 || !bytes.HasPrefix(b, []byte(want)) {
			return fmt.Errorf("introspect: %d %s", st, b)
		}
		return nil
	}
	if rate == 0 {
		return drive(conns, next, nil, call)
	}
	start, total := time.Now(), int(d.Seconds()*float64(rate))
	var due0 atomic.Int64
	next = func() (int, bool) {
		i := int(due0.Add(1) - 1)
		return i, i < total
	}
	due := func(i int) time.Time { return start.Add(time.Duration(i) * time.Second / time.Duration(rate)) }
	return drive(conns, next, due, call)
}

func (e *env) exchangeRun(conns, count, run int) (result, error) {
	cpu0 := cpuTime(e.pid)
	// Spread codes over tenants as real traffic would be: interleaved, so
	// that concurrent exchanges are for different customers.
	const tenants = 8
	type job struct{ tenant, code string }
	jobs := make([]job, 0, count)
	per := make([][]string, tenants)
	for t := range per {
		var err error
		if per[t], err = e.prepare(fmt.Sprintf("ex-%s-%d-%d", e.tag, run, t), count/tenants, conns); err != nil {
			return result{}, err
		}
	}
	for i := 0; i < count/tenants; i++ {
		for t := range per {
			jobs = append(jobs, job{fmt.Sprintf("ex-%s-%d-%d", e.tag, run, t), per[t][i]})
		}
	}
	engs := make([]string, conns)
	for i := range engs {
		engs[i] = e.sup.Mint(fmt.Sprintf("engineer-%d", i), "actas", time.Hour, map[string]any{"groups": []string{"support"}})
	}
	setup := cpuTime(e.pid) - cpu0
	var n atomic.Int64
	next := func() (int, bool) {
		i := int(n.Add(1) - 1)
		return i, i < len(jobs)
	}
	w0, pg0 := writes(e.pid), e.postgresCPU()
	res := drive(conns, next, nil, func(i int) error {
		j := jobs[i]
		st, b, err := e.call("POST", "/token", "", "application/x-www-form-urlencoded", exchangeBody(j.tenant, j.code, engs[i%len(engs)]), false)
		if err != nil {
			return err
		}
		if st != 200 {
			return fmt.Errorf("exchange: %d %s", st, b)
		}
		return nil
	})
	res.setupCPU = setup
	res.writes, res.postgresCPU = writes(e.pid).minus(w0), e.postgresCPU()-pg0
	return res, nil
}

// postgresCPU is the PostgreSQL server's CPU time so far, if it is
// storage and on this machine; else 0.
func (e *env) postgresCPU() time.Duration {
	if !e.postgres {
		return 0
	}
	return postgresCPU()
}

// localPostgres says whether storage is a PostgreSQL server on this
// machine.
func localPostgres(storage string) bool {
	u, err := url.Parse(storage)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return false
	}
	switch u.Hostname() {
	case "", "localhost":
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}
