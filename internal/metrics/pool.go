package metrics

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector reports a PostgreSQL store's connection pool at every
// scrape (pgxpool.Stat): connections in use, idle and allowed, the
// acquisitions that had to wait and for how long in total, and the time a
// ping of the database takes now (a probe of store latency, like
// hearth_store_probe_seconds on bbolt, which shares its name).
func PoolCollector(pool *pgxpool.Pool) prometheus.Collector { return &poolCollector{pool: pool} }

var (
	poolConnsDesc = prometheus.NewDesc("hearth_store_pool_connections",
		"PostgreSQL connections of the store's pool, by state (acquired, idle, max).", []string{"state"}, nil)
	poolWaitsDesc = prometheus.NewDesc("hearth_store_pool_empty_acquires_total",
		"Connection acquisitions that waited because the pool had no idle connection.", nil, nil)
	poolWaitSecsDesc = prometheus.NewDesc("hearth_store_pool_acquire_wait_seconds_total",
		"Time spent waiting for a connection of the store's pool.", nil, nil)
)

type poolCollector struct{ pool *pgxpool.Pool }

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolConnsDesc
	ch <- poolWaitsDesc
	ch <- poolWaitSecsDesc
	ch <- storeProbeDesc
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.AcquiredConns()), "acquired")
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.MaxConns()), "max")
	ch <- prometheus.MustNewConstMetric(poolWaitsDesc, prometheus.CounterValue, float64(st.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolWaitSecsDesc, prometheus.CounterValue, st.AcquireDuration().Seconds())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	took := -1.0
	if err := c.pool.Ping(ctx); err == nil {
		took = time.Since(start).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(storeProbeDesc, prometheus.GaugeValue, took)
}
