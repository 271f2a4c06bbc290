package ops

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/actas/actas/broker/httpx"
)

// Pinger reports whether storage answers.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Handler serves the operations endpoints.
type Handler struct {
	store    Pinger
	gatherer prometheus.Gatherer
	log      *slog.Logger
	// status adds what readiness reports besides storage (policy, key),
	// and false while the server drains.
	status func() (map[string]any, bool)
}

// New returns the operations surface.
func New(store Pinger, gatherer prometheus.Gatherer, log *slog.Logger, status func() (map[string]any, bool)) *Handler {
	return &Handler{store: store, gatherer: gatherer, log: log, status: status}
}

// Mount adds /healthz and /readyz to r, and /metrics when withMetrics
// (otherwise it is served on its own listener).
func (h *Handler) Mount(r *mux.Router, withMetrics bool) {
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}).Methods(http.MethodGet)
	r.HandleFunc("/readyz", h.ready).Methods(http.MethodGet)
	if withMetrics {
		r.Handle("/metrics", h.Metrics()).Methods(http.MethodGet)
	}
}

// Metrics is the Prometheus exposition handler.
func (h *Handler) Metrics() http.Handler {
	return promhttp.HandlerFor(h.gatherer, promhttp.HandlerOpts{})
}

// ready answers 200 only when storage answers, keys are loaded and the
// server is not draining.
func (h *Handler) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	body, serving := h.status()
	if !serving {
		body["status"] = "draining"
		httpx.WriteJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	if err := h.store.Ping(ctx); err != nil {
		h.log.WarnContext(ctx, "readiness: storage", "err", err)
		body["status"] = "unavailable"
		body["storage"] = "unreachable"
		httpx.WriteJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	body["status"] = "ready"
	body["storage"] = "ok"
	httpx.WriteJSON(w, http.StatusOK, body)
}
