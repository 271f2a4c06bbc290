package broker

import (
	"context"
	"database/sql"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/actas/actas/storage"
)

// serverMetrics are the metrics the assembly owns; surfaces and workers
// register their own.
type serverMetrics struct {
	reloadFailures prometheus.Counter
	lockouts       prometheus.Counter
	jwksFetches    *prometheus.CounterVec
}

// registerMetrics registers the process, build, storage and domain
// metrics with reg.
func registerMetrics(reg *prometheus.Registry, st storage.Store) *serverMetrics {
	m := &serverMetrics{
		reloadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "actas_policy_reload_failures_total", Help: "Policy reloads rejected; the last good policy stayed in force.",
		}),
		lockouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "actas_tenant_lockouts_total", Help: "Tenants whose pending codes were voided after too many failed redemptions.",
		}),
		jwksFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "actas_upstream_jwks_fetches_total", Help: "JWKS fetches from upstream identity providers by issuer and result.",
		}, []string{"issuer", "result"}),
	}
	version, revision := buildVersion()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "actas_build_info", Help: "The running build: always 1, labelled with its version.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision},
	})
	build.Set(1)
	backlog := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "actas_outbox_backlog", Help: "Outbox messages not yet delivered (-1: storage did not answer).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := st.OutboxBacklog(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	})
	reg.MustRegister(m.reloadFailures, m.lockouts, m.jwksFetches, build, backlog,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if pools, ok := st.(interface{ DBs() map[string]*sql.DB }); ok {
		for name, db := range pools.DBs() {
			reg.MustRegister(collectors.NewDBStatsCollector(db, name))
		}
	}
	return m
}

// buildVersion is the module version and VCS revision of the binary.
func buildVersion() (version, revision string) {
	version, revision = "(unknown)", ""
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	version = bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			revision = s.Value
		}
	}
	return
}
