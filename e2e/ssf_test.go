package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/actas/actas/rp"
)

const loopbackPushes = "notifications:\n  allow_loopback_webhooks: true\n"

var (
	productOnce sync.Once
	productBin  string
	productErr  error
)

// startProduct runs examples/product against f, as client "product".
func startProduct(t *testing.T, f *fixture) string {
	productOnce.Do(func() {
		productBin = filepath.Join(filepath.Dir(actasBin), "product")
		out, err := exec.Command("go", "build", "-o", productBin, "../examples/product").CombinedOutput()
		if err != nil {
			productErr = fmt.Errorf("building examples/product: %v\n%s", err, out)
		}
	})
	if productErr != nil {
		t.Fatal(productErr)
	}
	listen := freePort(t)
	cmd := exec.Command(productBin, "--broker", f.base, "--client-id", "product", "--listen", listen)
	cmd.Env = append(childEnv(), "ACTAS_CLIENT_SECRET="+productSecret)
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("product logs:\n%s", logs.String())
		}
	})
	base := "http://" + listen
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(logs.String(), "product ready") {
			return base
		}
	}
	t.Fatalf("product not ready:\n%s", logs.String())
	return ""
}

func whoami(t *testing.T, base, token string) resp {
	req := mustGet(base + "/whoami")
	req.Header.Set("Authorization", "Bearer "+token)
	return do(t, req)
}

// TestPushRevocation: a product built on rp with a push stream refuses a
// terminated grant's still-unexpired JWT, quickly; measured over 100 grants.
func TestPushRevocation(t *testing.T) {
	f := newFixtureWith(t, testPolicy, loopbackPushes)
	product := startProduct(t, f)
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	eng := f.engineer(t, "eng-push")

	const n = 100
	lat := make([]time.Duration, 0, n)
	for i := range n {
		id, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"production"}})
		tr := f.exchange(t, "acme", code, eng)
		if tr.status != 200 {
			t.Fatalf("exchange: %s", tr.raw)
		}
		at := tr.str("access_token")
		if r := whoami(t, product, at); r.status != 200 || r.str("sub") != "admin-of-acme" || r.str("tenant") != "acme" ||
			r.body["act"].(map[string]any)["sub"] != "eng-push" {
			t.Fatalf("whoami %d: %d %s", i, r.status, r.raw)
		}
		if r := f.api(t, "DELETE", "/api/v1/tenants/acme/grants/"+id, admin, nil); r.status != 204 {
			t.Fatalf("terminate: %d", r.status)
		}
		start := time.Now()
		for whoami(t, product, at).status == 200 {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("grant %d: the product still accepts the token 10s after the terminate answer", i)
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	p50, p99 := lat[n/2], lat[n*99/100]
	t.Logf("terminate answer → product refuses the JWT, over %d grants: p50 %v, p99 %v, max %v", n, p50, p99, lat[n-1])
	if p99 > 2*time.Second {
		t.Fatalf("p99 %v: push revocation is far too slow", p99)
	}
	// A token that was never revoked still works: the product refuses only ended grants.
	_, code := f.grant(t, "acme", admin, map[string]any{"role": "monitor", "environments": []string{"sandbox"}})
	if r := whoami(t, product, f.exchange(t, "acme", code, eng).str("access_token")); r.status != 200 {
		t.Fatalf("a live grant's token was refused: %d %s", r.status, r.raw)
	}
	if r := whoami(t, product, "not-a-token"); r.status != 401 || r.str("error") != "invalid_token" {
		t.Fatalf("garbage token: %d %s", r.status, r.raw)
	}
}

// setReceiver is a push endpoint on a port that can go down and come
// back, counting each SET's deliveries.
type setReceiver struct {
	v    *rp.Verifier
	addr string
	mu   sync.Mutex
	seen map[string]int // jti -> deliveries
	srv  *http.Server
}

func (r *setReceiver) up(t *testing.T) {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	inner := r.v.Receiver()
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		var buf bytes.Buffer
		buf.ReadFrom(q.Body)
		var c struct{ Jti string }
		if parts := strings.Split(buf.String(), "."); len(parts) == 3 {
			json.Unmarshal(mustB64(parts[1]), &c)
		}
		r.mu.Lock()
		r.seen[c.Jti]++
		r.mu.Unlock()
		q.Body = readCloser{bytes.NewReader(buf.Bytes())}
		inner.ServeHTTP(w, q)
	})}
	go r.srv.Serve(ln)
}

func (r *setReceiver) down() { r.srv.Close() }

func (r *setReceiver) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps(r.seen)
}

// TestPushAcrossRestart: events for a receiver that is down are held in
// the durable outbox across an actas restart and delivered, exactly once
// each, when it is back.
func TestPushAcrossRestart(t *testing.T) {
	f := newFixtureWith(t, testPolicy, loopbackPushes)
	ctx := context.Background()
	v, err := rp.New(ctx, rp.Config{Issuer: f.base, Audience: "other-product"})
	if err != nil {
		t.Fatal(err)
	}
	rcv := &setReceiver{v: v, addr: freePort(t), seen: map[string]int{}}
	rcv.up(t)
	if _, err := rp.RegisterPushStream(ctx, v, "other", otherSecret, "http://"+rcv.addr+"/events"); err != nil {
		t.Fatal(err)
	}
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	eng := f.engineer(t, "eng-restart")
	var tokens []string
	var ids []string
	for range 3 {
		id, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"production"}})
		form := exchangeForm("acme", code, eng)
		form.Set("audience", "other-product")
		tr := f.form(t, "/token", form, "", "")
		if tr.status != 200 {
			t.Fatalf("exchange: %s", tr.raw)
		}
		if _, err := v.Verify(ctx, tr.str("access_token")); err != nil {
			t.Fatalf("receiver's verifier refuses a live token: %v", err)
		}
		tokens, ids = append(tokens, tr.str("access_token")), append(ids, id)
	}
	rcv.down()
	for _, id := range ids {
		if r := f.api(t, "DELETE", "/api/v1/tenants/acme/grants/"+id, admin, nil); r.status != 204 {
			t.Fatalf("terminate: %d", r.status)
		}
	}
	time.Sleep(1500 * time.Millisecond) // at least one failed attempt each
	f.stop(t)
	f.start(t)
	rcv.up(t)
	defer rcv.down()
	deadline := time.Now().Add(30 * time.Second)
	for len(rcv.counts()) < 3 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // room for a duplicate to show up
	got := rcv.counts()
	if len(got) != 3 {
		t.Fatalf("after the restart the receiver got %d distinct events, want 3: %v", len(got), got)
	}
	for jti, n := range got {
		if n != 1 {
			t.Errorf("event %s delivered %d times", jti, n)
		}
	}
	for i, tok := range tokens {
		if _, err := v.Verify(ctx, tok); err == nil {
			t.Errorf("token %d of a terminated grant still verifies at the receiver", i)
		}
	}
}

// TestSSFStreamsAndPoll: stream management is the bearer's own, poll
// delivery with acknowledgements, verification events.
func TestSSFStreamsAndPoll(t *testing.T) {
	f := newFixtureWith(t, testPolicy, loopbackPushes)
	cfg := do(t, mustGet(f.base+"/.well-known/ssf-configuration"))
	if cfg.status != 200 || cfg.str("issuer") != f.base || cfg.str("configuration_endpoint") != f.base+"/ssf/streams" || cfg.str("spec_version") != "1_0" {
		t.Fatalf("ssf-configuration: %s", cfg.raw)
	}
	bearer := func(id, secret string) string {
		r := f.form(t, "/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"ssf"}}, id, secret)
		if r.status != 200 || r.str("token_type") != "Bearer" {
			t.Fatalf("client_credentials: %d %s", r.status, r.raw)
		}
		return r.str("access_token")
	}
	call := func(method, path, tok string, body any) resp { return f.api(t, method, path, tok, body) }
	other, product := bearer("other", otherSecret), bearer("product", productSecret)

	// refusals
	if r := f.form(t, "/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"ssf"}, "client_id": {"actas-cli"}}, "", ""); r.str("error") != "unauthorized_client" {
		t.Fatalf("public client_credentials: %s", r.raw)
	}
	if r := f.form(t, "/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"read"}}, "other", otherSecret); r.str("error") != "invalid_scope" {
		t.Fatalf("wrong scope: %s", r.raw)
	}
	if r := call("GET", "/ssf/streams", "", nil); r.status != 401 {
		t.Fatalf("no bearer: %d", r.status)
	}
	if r := call("GET", "/ssf/streams", other+"x", nil); r.status != 401 {
		t.Fatalf("forged bearer: %d", r.status)
	}
	poll := call("POST", "/ssf/streams", other, map[string]any{"delivery": map[string]any{"method": "urn:ietf:rfc:8936"},
		"events_requested": []string{rp.EventSessionRevoked}})
	sid := poll.str("stream_id")
	ep, _ := poll.body["delivery"].(map[string]any)
	if poll.status != 201 || sid == "" || ep["endpoint_url"] != f.base+"/ssf/poll/"+sid || poll.str("aud") != "other-product" {
		t.Fatalf("create poll stream: %d %s", poll.status, poll.raw)
	}
	if r := call("GET", "/ssf/streams?stream_id="+sid, product, nil); r.status != 404 {
		t.Fatalf("another client's stream: %d %s", r.status, r.raw)
	}
	if r := call("DELETE", "/ssf/streams?stream_id="+sid, product, nil); r.status != 404 {
		t.Fatalf("deleting another client's stream: %d", r.status)
	}
	if r := call("POST", "/ssf/poll/"+sid, product, map[string]any{"returnImmediately": true}); r.status != 404 {
		t.Fatalf("polling another client's stream: %d", r.status)
	}
	if r := call("POST", "/ssf/streams", other, map[string]any{"delivery": map[string]any{"method": "urn:ietf:rfc:8935", "endpoint_url": "ftp://x"}}); r.status != 400 {
		t.Fatalf("bad push URL: %d %s", r.status, r.raw)
	}

	// verification, then a real event, through poll with acknowledgements
	if r := call("POST", "/ssf/streams/verify", other, map[string]any{"stream_id": sid, "state": "s-1"}); r.status != 204 {
		t.Fatalf("verify: %d %s", r.status, r.raw)
	}
	v, err := rp.New(context.Background(), rp.Config{Issuer: f.base, Audience: "other-product"})
	if err != nil {
		t.Fatal(err)
	}
	pollOnce := func(acks []string) map[string]any {
		r := call("POST", "/ssf/poll/"+sid, other, map[string]any{"ack": acks, "returnImmediately": true})
		if r.status != 200 {
			t.Fatalf("poll: %d %s", r.status, r.raw)
		}
		sets, _ := r.body["sets"].(map[string]any)
		for jti, set := range sets {
			if code, err := v.ApplySET(context.Background(), set.(string)); err != nil {
				t.Fatalf("SET %s does not verify: %s %v", jti, code, err)
			}
		}
		return sets
	}
	sets := pollOnce(nil)
	if len(sets) != 1 || v.LastVerification() != "s-1" {
		t.Fatalf("verification by poll: %v, state %q", sets, v.LastVerification())
	}
	var acks []string
	for jti := range sets {
		acks = append(acks, jti)
	}
	if again := pollOnce(nil); len(again) != 1 {
		t.Fatal("an unacknowledged SET must be offered again")
	}
	if after := pollOnce(acks); len(after) != 0 {
		t.Fatalf("acknowledged SETs offered again: %v", after)
	}

	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	id, code := f.grant(t, "acme", admin, map[string]any{"role": "manage", "environments": []string{"production"}})
	form := exchangeForm("acme", code, f.engineer(t, "eng-poll"))
	form.Set("audience", "other-product")
	at := f.form(t, "/token", form, "", "").str("access_token")
	if _, err := v.Verify(context.Background(), at); err != nil {
		t.Fatal(err)
	}
	f.api(t, "DELETE", "/api/v1/tenants/acme/grants/"+id, admin, nil)
	if sets := pollOnce(nil); len(sets) != 1 {
		t.Fatalf("session-revoked by poll: %v", sets)
	}
	if _, err := v.Verify(context.Background(), at); err == nil {
		t.Fatal("the polled session-revoked did not end the token at the receiver")
	}
	// paused: nothing transmitted; status round trip
	if r := call("POST", "/ssf/streams/status", other, map[string]any{"stream_id": sid, "status": "paused", "reason": "maintenance"}); r.status != 200 || r.str("status") != "paused" {
		t.Fatalf("pause: %d %s", r.status, r.raw)
	}
	if r := call("GET", "/ssf/streams/status?stream_id="+sid, other, nil); r.str("status") != "paused" || r.str("reason") != "maintenance" {
		t.Fatalf("status: %s", r.raw)
	}
	if r := call("DELETE", "/ssf/streams?stream_id="+sid, other, nil); r.status != 204 {
		t.Fatalf("delete: %d", r.status)
	}
	req, _ := http.NewRequest("GET", f.base+"/ssf/streams", nil)
	req.Header.Set("Authorization", "Bearer "+other)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list []any
	json.NewDecoder(res.Body).Decode(&list)
	res.Body.Close()
	if res.StatusCode != 200 || len(list) != 0 {
		t.Fatalf("streams after delete: %d %v", res.StatusCode, list)
	}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func mustB64(s string) []byte {
	b, _ := base64.RawURLEncoding.DecodeString(s)
	return b
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestPolicySignals: a policy edit that refuses a live token pushes a
// session-revoked for that token; one that narrows a token's scope pushes
// a token-claims-change. Both reach a poll stream of the token's audience.
func TestPolicySignals(t *testing.T) {
	f := newFixtureWith(t, testPolicy, loopbackPushes)
	ctx := context.Background()
	tok := f.form(t, "/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"ssf"}}, "other", otherSecret).str("access_token")
	sid := f.api(t, "POST", "/ssf/streams", tok, map[string]any{"delivery": map[string]any{"method": "urn:ietf:rfc:8936"}}).str("stream_id")
	v, err := rp.New(ctx, rp.Config{Issuer: f.base, Audience: "other-product"})
	if err != nil {
		t.Fatal(err)
	}
	admin := f.admin(t, "acme")
	f.enable(t, "acme", admin, false)
	redeem := func(role, env string) string {
		_, code := f.grant(t, "acme", admin, map[string]any{"role": role, "environments": []string{env}})
		form := exchangeForm("acme", code, f.engineer(t, "eng-pol"))
		form.Set("audience", "other-product")
		return f.form(t, "/token", form, "", "").str("access_token")
	}
	denied, narrowed := redeem("manage", "production"), redeem("manage", "sandbox")
	for _, at := range []string{denied, narrowed} {
		if _, err := v.Verify(ctx, at); err != nil {
			t.Fatal(err)
		}
	}
	sha0 := f.readyz(t)["policy_sha256"].(string)
	edited := withNoManageInProduction()
	edited = strings.Replace(edited, "{name: manage,  scopes: [read, write]}", "{name: manage,  scopes: [read]}", 1)
	if err := os.WriteFile(filepath.Join(f.dir, "policy.yaml"), []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	f.waitPolicy(t, sha0)
	kinds := map[string]bool{}
	for deadline := time.Now().Add(10 * time.Second); len(kinds) < 2 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		r := f.api(t, "POST", "/ssf/poll/"+sid, tok, map[string]any{"returnImmediately": true})
		sets, _ := r.body["sets"].(map[string]any)
		var acks []string
		for jti, set := range sets {
			parts := strings.Split(set.(string), ".")
			var c struct{ Events map[string]json.RawMessage }
			json.Unmarshal(mustB64(parts[1]), &c)
			for k := range c.Events {
				kinds[k] = true
			}
			if _, err := v.ApplySET(ctx, set.(string)); err != nil {
				t.Fatal(err)
			}
			acks = append(acks, jti)
		}
		f.api(t, "POST", "/ssf/poll/"+sid, tok, map[string]any{"ack": acks, "maxEvents": 0})
	}
	if !kinds[rp.EventSessionRevoked] || !kinds[rp.EventTokenClaimsChange] {
		t.Fatalf("events after the policy edit: %v", kinds)
	}
	if _, err := v.Verify(ctx, denied); err == nil {
		t.Fatal("the token the new policy refuses still verifies at the product")
	}
	if _, err := v.Verify(ctx, narrowed); err == nil {
		t.Fatal("a token issued before its claims changed still verifies at the product")
	}
	if f.active(t, denied) {
		t.Fatal("the refused token is active at introspection")
	}
}

// lockedBuffer is a bytes.Buffer a child process writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
