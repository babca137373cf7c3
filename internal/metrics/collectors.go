package metrics

import (
	"time"

	"github.com/hearth-home/hearth/audit"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// DeviceCert is one device's newest certificate, for [CertCollector].
type DeviceCert struct {
	Name     string
	NotAfter time.Time
}

// CertCollector reports, at every scrape, the seconds left on each
// enrolled device's newest certificate (label device: the name the owner
// gave it) and on the gateway's own server certificate. Negative means
// expired. devices lists the enrolled, unrevoked devices; gateway returns
// the server certificate's NotAfter.
func CertCollector(devices func() ([]DeviceCert, error), gateway func() time.Time, now func() time.Time) prometheus.Collector {
	if now == nil {
		now = time.Now
	}
	return &certCollector{devices: devices, gateway: gateway, now: now}
}

var (
	deviceLeftDesc = prometheus.NewDesc("hearth_device_cert_seconds_left",
		"Seconds until the newest certificate of each enrolled device expires.", []string{"device"}, nil)
	gatewayLeftDesc = prometheus.NewDesc("hearth_gateway_cert_seconds_left",
		"Seconds until the gateway's own server certificate expires (it renews itself at two thirds of its lifetime).", nil, nil)
)

type certCollector struct {
	devices func() ([]DeviceCert, error)
	gateway func() time.Time
	now     func() time.Time
}

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- deviceLeftDesc
	ch <- gatewayLeftDesc
}

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	ch <- prometheus.MustNewConstMetric(gatewayLeftDesc, prometheus.GaugeValue, c.gateway().Sub(now).Seconds())
	ds, err := c.devices()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(deviceLeftDesc, err)
		return
	}
	for _, d := range ds {
		ch <- prometheus.MustNewConstMetric(deviceLeftDesc, prometheus.GaugeValue, d.NotAfter.Sub(now).Seconds(), d.Name)
	}
}

// StoreCollector reports the embedded store's figures at every scrape:
// bbolt's cumulative time spent writing (and fsyncing) committed pages,
// pages written, read transactions, and the time a read transaction takes
// now (a probe of store latency).
func StoreCollector(db *bolt.DB) prometheus.Collector { return &storeCollector{db: db} }

var (
	storeWriteSecsDesc = prometheus.NewDesc("hearth_store_write_seconds_total",
		"Time the store spent writing and syncing committed pages.", nil, nil)
	storeWritesDesc = prometheus.NewDesc("hearth_store_pages_written_total",
		"Pages the store wrote.", nil, nil)
	storeReadsDesc = prometheus.NewDesc("hearth_store_read_transactions_total",
		"Read transactions the store started.", nil, nil)
	storeProbeDesc = prometheus.NewDesc("hearth_store_probe_seconds",
		"How long a read transaction of the store took at this scrape (-1: the store failed).", nil, nil)
)

type storeCollector struct{ db *bolt.DB }

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- storeWriteSecsDesc
	ch <- storeWritesDesc
	ch <- storeReadsDesc
	ch <- storeProbeDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.db.Stats()
	ch <- prometheus.MustNewConstMetric(storeWriteSecsDesc, prometheus.CounterValue, st.TxStats.GetWriteTime().Seconds())
	ch <- prometheus.MustNewConstMetric(storeWritesDesc, prometheus.CounterValue, float64(st.TxStats.GetWrite()))
	ch <- prometheus.MustNewConstMetric(storeReadsDesc, prometheus.CounterValue, float64(st.TxN))
	start := time.Now()
	took := -1.0
	if err := c.db.View(func(*bolt.Tx) error { return nil }); err == nil {
		took = time.Since(start).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(storeProbeDesc, prometheus.GaugeValue, took)
}

var witnessLagDesc = prometheus.NewDesc("hearth_audit_witness_lag_entries",
	"Entries the log holds beyond the newest checkpoint each configured witness cosigned (label witness: its key name from hearth.yaml).", []string{"witness"}, nil)

// WitnessCollector reports, at every scrape, each configured witness's lag
// behind the log (audit.Log.Witnesses). With no witnesses configured it
// reports nothing.
func WitnessCollector(witnesses func() []audit.WitnessStatus) prometheus.Collector {
	return &witnessCollector{witnesses: witnesses}
}

type witnessCollector struct {
	witnesses func() []audit.WitnessStatus
}

func (c *witnessCollector) Describe(ch chan<- *prometheus.Desc) { ch <- witnessLagDesc }

func (c *witnessCollector) Collect(ch chan<- prometheus.Metric) {
	for _, w := range c.witnesses() {
		ch <- prometheus.MustNewConstMetric(witnessLagDesc, prometheus.GaugeValue, float64(w.Lag), w.Name)
	}
}
