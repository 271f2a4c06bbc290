package broker

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	exchanges     *prometheus.CounterVec
	introspection *prometheus.CounterVec
	// ReloadFailures counts policy reloads that kept the last good policy.
	ReloadFailures prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, s *Server) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "actas_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "actas_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "actas_token_requests_total", Help: "Token endpoint requests by grant type and outcome.",
		}, []string{"grant_type", "outcome"}),
		introspection: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "actas_introspections_total", Help: "Introspection answers by result.",
		}, []string{"active"}),
		ReloadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "actas_policy_reload_failures_total", Help: "Policy reloads rejected; the last good policy stayed in force.",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.exchanges, m.introspection, m.ReloadFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// routeLabel maps a path to a bounded label set.
func routeLabel(path string) string {
	switch path {
	case "/token", "/introspect", "/revoke", "/jwks", "/healthz", "/readyz", "/metrics",
		"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server":
		return path
	}
	if path == "/hooks/tickets" {
		return path
	}
	if strings.HasPrefix(path, "/api/v1/") {
		return "/api/v1"
	}
	return "other"
}

func (m *metrics) observe(r *http.Request, status int, d time.Duration) {
	route := routeLabel(r.URL.Path)
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

func (s *Server) mountOps(r *mux.Router) {
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}).Methods(http.MethodGet)
	r.HandleFunc("/readyz", s.handleReady).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})).Methods(http.MethodGet)
}

// handleReady answers 200 only when storage answers and keys are loaded.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	body := map[string]any{"policy_sha256": s.policy.Load().SHA256, "signing_key": s.keys.Load().SigningKeyID()}
	if err := s.store.Ping(ctx); err != nil {
		s.logger(ctx).Warn("readiness: storage", "err", err)
		body["status"] = "unavailable"
		body["storage"] = "unreachable"
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	body["status"] = "ready"
	body["storage"] = "ok"
	writeJSON(w, http.StatusOK, body)
}
