// Package metrics exposes hearth's operational figures in the Prometheus
// text format, on a listener of their own that is off by default
// (`hearth serve --metrics-listen`).
//
// # What is counted, and from where
//
// Most figures come from the audit events every part already records: the
// [Metrics.Recorder] decorator counts gateway decisions (by route pattern,
// capability and decision), logins by outcome, lockouts and enrollments,
// and times each append. So a counter moves exactly when an entry is in
// the log, and no package needs a metrics dependency of its own. The
// audit writer reports its group commits through audit.Options.OnBatch;
// the gateway's TLS handshake failures arrive as net/http's error-log
// lines ([Metrics.HandshakeLog]); certificate lifetimes and store figures
// are read at scrape time by collectors.
//
// # Trust boundary
//
// The listener has no authentication, so it binds to loopback unless told
// otherwise, and no label ever carries a secret, a token, a user name or a
// path a client chose: routes are the configured patterns, capabilities
// only those the policy knows, outcomes and reasons from fixed sets. Label
// cardinality is therefore bounded by the configuration (routes ×
// capabilities × decisions) and by the number of devices the owner added.
package metrics

import (
	"context"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hearth-home/hearth/audit"
)

// Path is where the metrics listener serves the scrape.
const Path = "/metrics"

// DefaultPort is the metrics port when --metrics-listen names none.
const DefaultPort = "9464"

// ListenAddr completes a --metrics-listen value: an empty host means
// loopback (127.0.0.1), an empty port DefaultPort.
func ListenAddr(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = s, ""
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = DefaultPort
	}
	return net.JoinHostPort(host, port)
}

// Metrics holds hearth's collectors in a registry of its own (not the
// process-global one).
type Metrics struct {
	reg *prometheus.Registry

	requests    *prometheus.CounterVec
	handshakes  *prometheus.CounterVec
	logins      *prometheus.CounterVec
	lockouts    prometheus.Counter
	enrollments *prometheus.CounterVec
	appendSecs  *prometheus.HistogramVec
	batchSize   prometheus.Histogram
	batchSecs   prometheus.Histogram
	batchErrors prometheus.Counter
}

// latencyBuckets span half a millisecond (a batch on a fast disk) to
// 2.5 s (an SD card under load).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// New makes the collectors, with Go runtime and process figures (RSS, CPU,
// open files) besides hearth's own.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_gateway_requests_total",
		Help: "Agent requests the gateway decided, by configured route pattern (none: no route matched), capability and decision (allow, deny).",
	}, []string{"route", "capability", "decision"})
	m.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_tls_handshake_failures_total",
		Help: "Failed TLS handshakes on the gateway listener, by reason.",
	}, []string{"reason"})
	m.logins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_logins_total",
		Help: "Password and OIDC logins, by outcome (success, failure).",
	}, []string{"outcome"})
	m.lockouts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hearth_lockouts_total",
		Help: "Accounts locked after repeated failed logins.",
	})
	m.enrollments = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_enrollments_total",
		Help: "Device enrollments (one-time token and CSR), by outcome.",
	}, []string{"outcome"})
	m.appendSecs = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hearth_audit_append_seconds",
		Help:    "Time from submitting an audit entry to its being durable (what a request waits for), by result (ok, error).",
		Buckets: latencyBuckets,
	}, []string{"result"})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hearth_audit_batch_entries",
		Help:    "Entries per group commit (one fsync'd batch) of the audit log.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
	})
	m.batchSecs = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hearth_audit_batch_seconds",
		Help:    "Time to write, fsync and sign one audit batch.",
		Buckets: latencyBuckets,
	})
	m.batchErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hearth_audit_batch_failures_total",
		Help: "Audit batches that could not be written (their requests were refused with 503).",
	})
	m.reg.MustRegister(m.requests, m.handshakes, m.logins, m.lockouts, m.enrollments,
		m.appendSecs, m.batchSize, m.batchSecs, m.batchErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Register adds collectors (certificate lifetimes, the store).
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Handler serves the scrape (text format, or OpenMetrics when asked).
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry: m.reg, MaxRequestsInFlight: 4, Timeout: 10 * time.Second,
	}))
	return mux
}

// OnBatch is audit.Options.OnBatch.
func (m *Metrics) OnBatch(b audit.BatchStats) {
	if b.Err != nil {
		m.batchErrors.Inc()
		return
	}
	m.batchSize.Observe(float64(b.Entries))
	m.batchSecs.Observe(b.Write.Seconds())
}

// Recorder wraps next so that every recorded event also moves its
// counters, and every append is timed. known says which capabilities the
// policy knows (others are counted as "unknown", so that a client naming
// made-up capabilities cannot grow the label set); nil knows none.
func (m *Metrics) Recorder(next audit.Recorder, known func(string) bool) audit.Recorder {
	if known == nil {
		known = func(string) bool { return false }
	}
	return &recorder{next: next, m: m, known: known}
}

// recorder is the decorator; it passes Append through, so that callers
// that want the entry's index (auth) still get it.
type recorder struct {
	next  audit.Recorder
	m     *Metrics
	known func(string) bool
}

func (r *recorder) Record(ctx context.Context, e audit.Event) error {
	_, err := r.Append(ctx, e)
	return err
}

// Append records e through next and counts it once it is durable.
func (r *recorder) Append(ctx context.Context, e audit.Event) (int64, error) {
	start := time.Now()
	idx := int64(-1)
	var err error
	if a, ok := r.next.(interface {
		Append(context.Context, audit.Event) (int64, error)
	}); ok {
		idx, err = a.Append(ctx, e)
	} else {
		err = r.next.Record(ctx, e)
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	r.m.appendSecs.WithLabelValues(result).Observe(time.Since(start).Seconds())
	if err == nil {
		r.count(e)
	}
	return idx, err
}

func (r *recorder) count(e audit.Event) {
	switch e.Name {
	case audit.EventAuthzDecision:
		// Gateway decisions on agent paths carry their route pattern;
		// hearth's own API decisions carry a source and are not agent
		// requests; a closed websocket is not a new request.
		if e.Meta["source"] != "" || e.Meta["upgrade"] != "" || e.Meta["similar_unrecorded"] != "" {
			return
		}
		route := e.Meta["route"]
		if route == "" {
			route = "none"
		}
		c := e.Meta["capability"]
		switch {
		case c == "":
			c = "none"
		case !r.known(c):
			c = "unknown"
		}
		r.m.requests.WithLabelValues(route, c, outcome(e.Outcome)).Inc()
	case audit.EventAuthLogin:
		r.m.logins.WithLabelValues(outcome(e.Outcome)).Inc()
	case audit.EventAuthLockout:
		r.m.lockouts.Inc()
	case audit.EventDeviceEnroll:
		r.m.enrollments.WithLabelValues(outcome(e.Outcome)).Inc()
	}
}

// outcome keeps the label to audit's fixed set.
func outcome(o string) string {
	switch o {
	case audit.OutcomeAllow, audit.OutcomeDeny, audit.OutcomeSuccess, audit.OutcomeFailure, audit.OutcomeError:
		return o
	}
	return "other"
}

// HandshakeLog is an io.Writer for the gateway server's ErrorLog: it counts
// each "TLS handshake error" line by reason and passes every line on to
// next (which may be nil).
func (m *Metrics) HandshakeLog(next func(p []byte) (int, error)) *HandshakeWriter {
	return &HandshakeWriter{m: m, next: next}
}

// HandshakeWriter is what HandshakeLog returns.
type HandshakeWriter struct {
	m    *Metrics
	next func(p []byte) (int, error)
}

func (w *HandshakeWriter) Write(p []byte) (int, error) {
	if line := string(p); strings.Contains(line, "TLS handshake error") {
		w.m.handshakes.WithLabelValues(HandshakeReason(line)).Inc()
	}
	if w.next != nil {
		return w.next(p)
	}
	return len(p), nil
}

// HandshakeReason sorts a handshake error into a fixed set of reasons.
func HandshakeReason(msg string) string {
	l := strings.ToLower(msg)
	switch {
	case strings.Contains(l, "unsupported versions") || strings.Contains(l, "protocol version"):
		return "protocol_version"
	case strings.Contains(l, "does not look like a tls handshake") || strings.Contains(l, "client sent an http request"):
		return "not_tls"
	case strings.Contains(l, "clientauth"):
		return "client_cert_usage"
	case strings.Contains(l, "validity") || strings.Contains(l, "expired"):
		return "client_cert_expired"
	case strings.Contains(l, "unknown authority") || strings.Contains(l, "unknown certificate authority") || strings.Contains(l, "unknown ca"):
		return "unknown_ca"
	case strings.Contains(l, "certificate"):
		return "bad_certificate"
	case strings.Contains(l, "no cipher suite") || strings.Contains(l, "no application protocol") || strings.Contains(l, "no mutually supported"):
		return "negotiation"
	case strings.Contains(l, "timeout"):
		return "timeout"
	case strings.Contains(l, "eof") || strings.Contains(l, "connection reset") || strings.Contains(l, "broken pipe"):
		return "client_closed"
	}
	return "other"
}
