package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"

	"github.com/actas/actas/rp/dpop"

	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
)

// freshDatabase creates an empty database for one test and returns its URL.
func freshDatabase(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("ACTAS_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("ACTAS_TEST_POSTGRES_DSN not set")
	}
	admin, err := sqlx.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	rand.Read(b)
	name := fmt.Sprintf("actas_e2e_%x", b)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		admin.Close()
	})
	u, _ := url.Parse(dsn)
	u.Path = "/" + name
	return u.String()
}

// pgProxy is a loopback TCP proxy in front of PostgreSQL that the test can
// take down (every connection cut, new ones refused) and bring back, or
// stall (connections stay open, no byte moves: a partition).
type pgProxy struct {
	ln     net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]bool
	// stalled is closed while traffic flows; a stall replaces it with an
	// open channel that copying waits on.
	stallMu sync.Mutex
	flowing chan struct{}
}

func startProxy(t *testing.T, target string) *pgProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{ln: ln, target: target, conns: map[net.Conn]bool{}, flowing: make(chan struct{})}
	close(p.flowing)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.down.Load() {
				c.Close()
				continue
			}
			go p.pipe(c)
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *pgProxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	go func() { p.copy(up, c); up.Close() }()
	p.copy(c, up)
	c.Close()
}

// copy forwards src to dst, holding every chunk while the proxy stalls.
func (p *pgProxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.stallMu.Lock()
			flowing := p.flowing
			p.stallMu.Unlock()
			<-flowing
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// stall stops every byte in both directions until resume; connections
// stay open, as in a network partition.
func (p *pgProxy) stall() {
	p.stallMu.Lock()
	p.flowing = make(chan struct{})
	p.stallMu.Unlock()
}

func (p *pgProxy) resume() {
	p.stallMu.Lock()
	close(p.flowing)
	p.stallMu.Unlock()
}

func (p *pgProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

func (p *pgProxy) setDown(down bool) {
	p.down.Store(down)
	if down {
		p.cut()
	}
}

// pgFixture runs n actas replicas on one fresh PostgreSQL database,
// optionally through a proxy.
type pgFixture struct {
	replicas  []*server
	cust, sup *idp
	dbURL     string
	proxy     *pgProxy
}

func newPGFixture(t *testing.T, n int, withProxy bool, policy string, edit ...func(cfgPath string)) *pgFixture {
	t.Helper()
	dbURL := freshDatabase(t)
	f := &pgFixture{cust: startIDP(t), sup: startIDP(t), dbURL: dbURL}
	storage := dbURL
	if withProxy {
		u, _ := url.Parse(dbURL)
		f.proxy = startProxy(t, u.Host)
		u.Host = f.proxy.ln.Addr().String()
		storage = u.String()
	}
	issuer := ""
	for i := 0; i < n; i++ {
		dir := t.TempDir()
		listen := freePort(t)
		if issuer == "" {
			issuer = listen // one deployment, one issuer, whichever replica answers
		}
		cfg := writeReplicaConfig(t, dir, issuer, listen, storage, f.cust, f.sup, policy)
		for _, e := range edit {
			e(cfg)
		}
		f.replicas = append(f.replicas, startServer(t, cfg, listen, "ACTAS_SECRET_KEY="+pgSecret))
	}
	return f
}

func (f *pgFixture) fixture(i int) *fixture {
	return &fixture{server: f.replicas[i], cust: f.cust, sup: f.sup}
}

func TestPostgresReplicas(t *testing.T) {
	pf := newPGFixture(t, 2, false, testPolicy)
	a, b := pf.fixture(0), pf.fixture(1)
	admin := a.admin(t, "acme")
	a.enable(t, "acme", admin, false)
	id, code := a.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"production"}})
	tr := b.exchange(t, "acme", code, b.engineer(t, "eng-b"))
	if tr.status != 200 {
		t.Fatalf("redeem through B: %s", tr.raw)
	}
	at := tr.str("access_token")
	if !b.active(t, at) || !a.active(t, at) {
		t.Fatal("a token issued by B is not active on both replicas")
	}
	if r := a.exchange(t, "acme", code, a.engineer(t, "eng-a")); r.status != 400 {
		t.Fatalf("the code redeemed twice across replicas: %s", r.raw)
	}
	// A DPoP proof used at one replica is refused at the other.
	_, code2 := a.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
	key, _ := dpop.NewKey()
	proof, _ := key.Proof("POST", a.base+"/token", "", time.Now())
	bound := postWithProof(t, b.base+"/token", exchangeForm("acme", code2, b.engineer(t, "eng-b")), proof)
	if bound.status != 200 || bound.str("token_type") != "DPoP" {
		t.Fatalf("bound exchange through B: %d %s", bound.status, bound.raw)
	}
	bat := bound.str("access_token")
	ui, _ := key.Proof("GET", a.base+"/userinfo", bat, time.Now())
	for i, s := range []*server{a.server, b.server} {
		req := mustGet(s.base + "/userinfo")
		req.Header.Set("Authorization", "DPoP "+bat)
		req.Header.Set("DPoP", ui)
		r := do(t, req)
		if (i == 0) != (r.status == 200) || (i == 1 && r.str("error") != "invalid_dpop_proof") {
			t.Fatalf("userinfo with one proof at replica %d: %d %s", i, r.status, r.raw)
		}
	}
	if r := a.api(t, "DELETE", "/api/v1/tenants/acme/grants/"+id, admin, nil); r.status != 204 {
		t.Fatalf("terminate through A: %d", r.status)
	}
	if b.active(t, at) {
		t.Fatal("B still answers active after A terminated the grant")
	}
	// Both replicas publish the same keys.
	ka, kb := do(t, mustGet(a.base+"/jwks")), do(t, mustGet(b.base+"/jwks"))
	if string(ka.raw) != string(kb.raw) {
		t.Fatalf("replicas publish different JWKS:\n%s\n%s", ka.raw, kb.raw)
	}
}

func TestPostgresOutage(t *testing.T) {
	pf := newPGFixture(t, 1, true, testPolicy)
	f := pf.fixture(0)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	redeem := func() string {
		_, code := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
		tr := f.exchange(t, "acme", code, f.engineer(t, "eng-o"))
		if tr.status != 200 {
			t.Fatalf("exchange: %s", tr.raw)
		}
		return tr.str("access_token")
	}
	live, revoked, revokeInOutage := redeem(), redeem(), redeem()
	if r := f.form(t, "/revoke", url.Values{"token": {revoked}, "client_id": {"actas-cli"}}, "", ""); r.status != 200 {
		t.Fatalf("revoke: %d", r.status)
	}

	// Introspection load on the revoked and the live token throughout.
	ctx, stop := context.WithCancel(context.Background())
	var revokedActive, liveActive, unavailable, total atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				for _, tok := range []string{revoked, live} {
					r := f.form(t, "/introspect", url.Values{"token": {tok}}, "product", productSecret)
					total.Add(1)
					switch {
					case r.status == 503 && r.str("error") != "":
						unavailable.Add(1)
					case r.status == 200 && r.body["active"] == true && tok == revoked:
						revokedActive.Add(1)
					case r.status == 200 && r.body["active"] == true:
						liveActive.Add(1)
					}
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	pf.proxy.setDown(true)
	time.Sleep(500 * time.Millisecond)
	if r := f.form(t, "/revoke", url.Values{"token": {revokeInOutage}, "client_id": {"actas-cli"}}, "", ""); r.status != 503 {
		t.Errorf("revoke during the outage answered %d, want 503", r.status)
	}
	if st := f.readyz(t)["status"]; st != "unavailable" {
		t.Errorf("readyz during the outage: %v", st)
	}
	if r := f.api(t, "POST", "/api/v1/tenants/acme/grants", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}}); r.status != 503 {
		t.Errorf("grant during the outage answered %d, want 503", r.status)
	}
	time.Sleep(500 * time.Millisecond)
	duringOutage := unavailable.Load()
	pf.proxy.setDown(false)

	// Service resumes by itself.
	deadline := time.Now().Add(15 * time.Second)
	for !f.active(t, live) {
		if time.Now().After(deadline) {
			t.Fatal("service did not resume after PostgreSQL came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Connections killed inside PostgreSQL are replaced too.
	adm, err := sqlx.Open("pgx", pf.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	dbName := strings.TrimPrefix(mustParse(pf.dbURL).Path, "/")
	if _, err := adm.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, dbName); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	wg.Wait()

	if n := revokedActive.Load(); n != 0 {
		t.Fatalf("%d introspections answered active for a revoked token", n)
	}
	if duringOutage == 0 {
		t.Fatal("no introspection answered 503 during the outage")
	}
	if !f.active(t, live) || f.active(t, revoked) {
		t.Fatal("wrong answers after recovery")
	}
	if !f.active(t, revokeInOutage) {
		t.Fatal("a revoke answered 503 must not have taken effect")
	}
	if st := f.readyz(t)["status"]; st != "ready" {
		t.Fatalf("readyz after recovery: %v", st)
	}
	t.Logf("%d introspections: %d answered 503 during the outage, %d active for the live token, 0 active for the revoked one",
		total.Load(), unavailable.Load(), liveActive.Load())
}

// TestKeyRotation: a resource server that caches the JWKS and refetches on
// an unknown kid (go-oidc's RemoteKeySet) keeps verifying through two
// rotations, and tokens are refused once expired.
func TestKeyRotation(t *testing.T) {
	shortTokens := strings.Replace(testPolicy, "tokens: {access_ttl: 15m, refresh_ttl: 12h}", "tokens: {access_ttl: 4s, refresh_ttl: 1h}", 1)
	pf := newPGFixture(t, 2, false, shortTokens)
	a, b := pf.fixture(0), pf.fixture(1)
	ctx := context.Background()
	rs := oidc.NewVerifier(a.base, oidc.NewRemoteKeySet(ctx, a.base+"/jwks"), &oidc.Config{ClientID: "product", SupportedSigningAlgs: []string{"ES256"}})
	admin := a.admin(t, "acme")
	a.enable(t, "acme", admin, false)
	issue := func(f *fixture) string {
		_, code := a.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
		tr := f.exchange(t, "acme", code, f.engineer(t, "eng-k"))
		if tr.status != 200 {
			t.Fatalf("exchange: %s", tr.raw)
		}
		return tr.str("access_token")
	}
	failures := 0
	verify := func(tok string) {
		if _, err := rs.Verify(ctx, tok); err != nil {
			failures++
			t.Errorf("resource server refused a live token: %v", err)
		}
	}
	var tokens []string
	kids := map[string]bool{}
	for round := 0; round < 3; round++ {
		for _, f := range []*fixture{a, b} {
			tok := issue(f)
			kids[header(t, tok)["kid"].(string)] = true
			verify(tok)
			tokens = append(tokens, tok)
		}
		for _, tok := range tokens[max(0, len(tokens)-4):] {
			verify(tok) // tokens signed before the rotation still verify
		}
		if round == 2 {
			break
		}
		rot := exec.Command(actasBin, "keys", "rotate", "--config", a.cfgPath, "--force")
		rot.Env = a.env
		if out, err := rot.CombinedOutput(); err != nil {
			t.Fatalf("keys rotate: %v\n%s", err, out)
		}
		for _, r := range pf.replicas { // replicas re-read keys on SIGHUP (and every 30s)
			r.cmd.Process.Signal(syscall.SIGHUP)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if len(kids) != 3 || failures != 0 {
		t.Fatalf("%d signing keys seen, %d verification failures; want 3 and 0", len(kids), failures)
	}
	list := exec.Command(actasBin, "keys", "list", "--config", a.cfgPath)
	list.Env = a.env
	out, _ := list.CombinedOutput()
	if strings.Count(string(out), "previous") != 2 || strings.Count(string(out), "current") != 1 || strings.Count(string(out), "next") != 1 {
		t.Fatalf("keys list after two rotations:\n%s", out)
	}
	time.Sleep(5 * time.Second) // every token above has expired
	for _, tok := range tokens {
		if _, err := rs.Verify(ctx, tok); err == nil {
			t.Fatal("an expired token still verifies")
		}
		if a.active(t, tok) {
			t.Fatal("an expired token introspects active")
		}
	}
}

func mustParse(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// TestPostgresStall: PostgreSQL stops answering for 8 s while connections
// stay open (a partition, not a refusal). Every request that overlaps the
// stall answers within storage_timeout (2 s) plus a little, 503
// temporarily_unavailable when storage is needed, and a revoked token is
// never active.
func TestPostgresStall(t *testing.T) {
	pf := newPGFixture(t, 1, true, testPolicy)
	f := pf.fixture(0)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	eng := f.engineer(t, "eng-s")
	redeem := func() string {
		_, code := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
		tr := f.exchange(t, "acme", code, eng)
		if tr.status != 200 {
			t.Fatalf("exchange: %s", tr.raw)
		}
		return tr.str("access_token")
	}
	live, revoked := redeem(), redeem()
	spare := []string{redeem(), redeem(), redeem(), redeem()}
	if r := f.form(t, "/revoke", url.Values{"token": {revoked}, "client_id": {"actas-cli"}}, "", ""); r.status != 200 {
		t.Fatalf("revoke: %d", r.status)
	}

	const bound = 2500 * time.Millisecond // storage_timeout 2s, plus HTTP and scheduling
	var stallStart, stallEnd atomic.Int64
	type result struct {
		start, end time.Time
		status     int
		what       string
	}
	var mu sync.Mutex
	var results []result
	var revokedActive atomic.Int64
	record := func(what string, start time.Time, r resp) {
		mu.Lock()
		results = append(results, result{start, time.Now(), r.status, what})
		mu.Unlock()
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				for _, tok := range []string{revoked, live} {
					start := time.Now()
					r := f.form(t, "/introspect", url.Values{"token": {tok}}, "product", productSecret)
					record("introspect", start, r)
					if r.status == 200 && r.body["active"] == true && tok == revoked {
						revokedActive.Add(1)
					}
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	pf.proxy.stall()
	stallStart.Store(time.Now().UnixNano())
	for i, tok := range spare { // revocations and a grant during the stall
		start := time.Now()
		record("revoke", start, f.form(t, "/revoke", url.Values{"token": {tok}, "client_id": {"actas-cli"}}, "", ""))
		if i == 0 {
			start = time.Now()
			record("grant", start, f.api(t, "POST", "/api/v1/tenants/acme/grants", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}}))
		}
		time.Sleep(time.Second)
	}
	time.Sleep(8*time.Second - time.Since(time.Unix(0, stallStart.Load())))
	stallEnd.Store(time.Now().UnixNano())
	pf.proxy.resume()
	deadline := time.Now().Add(15 * time.Second)
	for !f.active(t, live) {
		if time.Now().After(deadline) {
			t.Fatal("service did not resume after the stall")
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	wg.Wait()

	from, to := time.Unix(0, stallStart.Load()), time.Unix(0, stallEnd.Load())
	overlapping, unavailable := 0, 0
	var slowest time.Duration
	for _, r := range results {
		if r.end.Before(from) || r.start.After(to) {
			continue
		}
		overlapping++
		d := r.end.Sub(r.start)
		slowest = max(slowest, d)
		if d > bound {
			t.Errorf("%s overlapping the stall took %s (bound %s)", r.what, d, bound)
		}
		if r.status == 503 {
			unavailable++
		}
		if r.what != "introspect" && r.status != 503 {
			t.Errorf("%s during the stall answered %d, want 503", r.what, r.status)
		}
	}
	if n := revokedActive.Load(); n != 0 {
		t.Fatalf("%d introspections answered active for a revoked token", n)
	}
	if overlapping == 0 || unavailable == 0 {
		t.Fatalf("%d requests overlapped the stall, %d answered 503", overlapping, unavailable)
	}
	if f.active(t, revoked) || !f.active(t, live) {
		t.Fatal("wrong answers after the stall")
	}
	t.Logf("%d requests overlapped the 8s stall: %d answered 503, slowest %s (bound %s)", overlapping, unavailable, slowest.Round(time.Millisecond), bound)
}
