package broker

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

func newForm(path, body string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) inc() int64 { return c.n.Add(1) - 1 }

// BenchmarkIntrospect measures one introspection through the handler:
// client authentication, JWT verification and the storage re-check.
func BenchmarkIntrospect(b *testing.B) {
	e := newTestEnv(b)
	admin := e.admin(b)
	e.enable(b, admin)
	eng := e.engineer(b)
	tokens := make([]string, 64)
	for i := range tokens {
		tokens[i] = e.redeem(b, admin, eng)
	}
	bodies := make([]string, len(tokens))
	for i, t := range tokens {
		bodies[i] = url.Values{"token": {t}}.Encode()
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			req := newForm("/introspect", bodies[i%len(bodies)])
			req.SetBasicAuth("product", testProductSecret)
			w := e.do(b, req)
			if w.Code != 200 || !strings.HasPrefix(w.Body.String(), `{"active":true`) {
				b.Fatalf("introspect: %d %s", w.Code, w.Body)
			}
			i++
		}
	})
}

// BenchmarkExchange measures one durable token exchange (code redeemed,
// token and refresh token and two audit rows committed) through the handler.
func BenchmarkExchange(b *testing.B) {
	e := newTestEnv(b)
	admin := e.admin(b)
	e.enable(b, admin)
	eng := e.engineer(b)
	codes := make([]string, b.N)
	for i := range codes {
		codes[i] = e.code(b, admin)
	}
	var next atomicCounter
	b.SetParallelism(16) // many clients queue on SQLite's single writer, as under real load
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.inc()
			w := e.post(b, "/token", exchangeValues(codes[i], eng))
			if w.Code != 200 {
				b.Fatalf("exchange: %d %s", w.Code, w.Body)
			}
		}
	})
}
