package httpx

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
)

type ctxKey struct{}

// requestInfo is what the middleware puts on a request's context (one
// value, one allocation): its ID, and the matched route's template, which
// the router fills in.
type requestInfo struct {
	id, route string
}

// RequestID returns the request ID carried by ctx, or "".
func RequestID(ctx context.Context) string {
	if ri, ok := ctx.Value(ctxKey{}).(*requestInfo); ok {
		return ri.id
	}
	return ""
}

// LogHandler wraps h so that every record logged with a request's context
// carries its request_id.
func LogHandler(h slog.Handler) slog.Handler { return requestIDHandler{h} }

type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(as)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}

// Metrics are the HTTP request metrics, labelled by route template (so the
// label set is bounded whatever paths clients send).
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics registers the HTTP metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "actas_http_requests_total", Help: "HTTP requests by route template and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "actas_http_request_duration_seconds", Help: "HTTP request latency by route template.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

// Middleware wraps the router: it assigns request IDs, bounds bodies,
// recovers panics into an RFC 6749 server_error, writes the access log and
// records metrics by the matched route's template ("other" when nothing
// matched).
func Middleware(r *mux.Router, log *slog.Logger, m *Metrics) http.Handler {
	r.Use(func(next http.Handler) http.Handler { // runs only when a route matched
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if ri, ok := req.Context().Value(ctxKey{}).(*requestInfo); ok {
				if t, err := mux.CurrentRoute(req).GetPathTemplate(); err == nil {
					ri.route = t
				}
			}
			next.ServeHTTP(w, req)
		})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		id := req.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-ID", id)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		req.Body = http.MaxBytesReader(w, req.Body, MaxBodyBytes+1)
		ri := &requestInfo{id: id, route: "other"}
		ctx := context.WithValue(req.Context(), ctxKey{}, ri)
		req = req.WithContext(ctx)
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				log.ErrorContext(req.Context(), "panic in handler", "path", req.URL.Path, "err", fmt.Sprint(p))
				if !rec.wrote {
					rec.Header().Set("Content-Type", "application/json")
					rec.Header().Set("Cache-Control", "no-store")
					rec.WriteHeader(http.StatusInternalServerError)
					rec.Write([]byte(`{"error":"server_error","error_description":"the server could not complete the request"}` + "\n"))
				}
			}
			d := time.Since(start)
			m.requests.WithLabelValues(ri.route, strconv.Itoa(rec.status)).Inc()
			m.latency.WithLabelValues(ri.route).Observe(d.Seconds())
			log.InfoContext(ctx, "request", "method", req.Method, "route", ri.route, "status", rec.status,
				"duration_ms", float64(d.Microseconds())/1000)
		}()
		r.ServeHTTP(rec, req)
	})
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer
// (flushing Server-Sent Events, deadlines).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
