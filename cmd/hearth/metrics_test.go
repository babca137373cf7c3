package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var metricsRE = regexp.MustCompile(`metrics on http://(\S+)/metrics`)

// scrape fetches the metrics over HTTP and parses them with Prometheus's
// own text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels
// include want, and whether there is one.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// `hearth serve --metrics-listen` serves Prometheus metrics on loopback:
// gateway decisions by route pattern, capability and decision, handshake
// failures by reason, logins, enrollments, certificate lifetimes, audit
// and store figures; no label carries a client's path.
func TestMetricsScrape(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var in initOut
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "init", "--owner", "alice", "--agent", "sample", "--json")), &in); err != nil {
		t.Fatal(err)
	}
	_, upstream := startAgent(t)
	srv := startServe(t, dir, upstream, "--metrics-listen", "127.0.0.1:0")
	var maddr string
	for deadline := time.Now().Add(10 * time.Second); maddr == ""; time.Sleep(20 * time.Millisecond) {
		if m := metricsRE.FindStringSubmatch(srv.stderr.String()); m != nil {
			maddr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("serve did not say where the metrics are; stderr:\n%s", srv.stderr.String())
		}
	}
	if host, _, _ := net.SplitHostPort(maddr); host != "127.0.0.1" {
		t.Errorf("metrics listen on %s, want loopback", maddr)
	}

	client, _ := deviceClient(t, enrollDevice(t, dir, srv.gateway, in.Fingerprint, "pi", "system:read"))
	if out := mustHearth(t, dir, "device", "list"); !regexp.MustCompile(`(?m)^NAME\s+STATE\s+CERT EXPIRES\s+WARNINGS`).MatchString(out) || !regexp.MustCompile(`(?m)^pi\s+enrolled\s+\S+ \S+\s+-\s`).MatchString(out) {
		t.Errorf("device list = %q, want a WARNINGS column with none for a fresh certificate", out)
	}
	for path, want := range map[string]int{
		"/api/status":                       http.StatusOK,
		"/api/settings":                     http.StatusForbidden,
		"/api/nowhere/hth_at_secretish-xyz": http.StatusForbidden,
	} {
		resp, err := client.Get("https://" + srv.gateway + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}

	// A wrong password: one failed login.
	rootPEM, err := os.ReadFile(in.RootCert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	anon := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	resp, err := anon.Post("https://"+srv.gateway+"/.hearth/v1/auth/login", "application/json",
		bytes.NewReader([]byte(`{"username":"alice","password":"not the password at all, surely"}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("login with a wrong password = %d, want 401", resp.StatusCode)
	}
	// A client that offers only TLS 1.2: the gateway is TLS 1.3 only.
	c, err := tls.Dial("tcp", srv.gateway, &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: tls.VersionTLS12})
	if err == nil {
		c.Close()
		t.Fatal("a TLS 1.2 handshake with the gateway succeeded")
	}

	var fams map[string]*dto.MetricFamily
	checks := []struct {
		name   string
		labels map[string]string
		ok     func(float64) bool
		want   string
	}{
		{"hearth_gateway_requests_total", map[string]string{"route": "/api/status", "capability": "status", "decision": "allow"}, func(v float64) bool { return v == 1 }, "1"},
		{"hearth_gateway_requests_total", map[string]string{"route": "/api/settings", "capability": "settings:modify", "decision": "deny"}, func(v float64) bool { return v == 1 }, "1"},
		{"hearth_gateway_requests_total", map[string]string{"route": "none", "capability": "none", "decision": "deny"}, func(v float64) bool { return v == 1 }, "1"},
		{"hearth_enrollments_total", map[string]string{"outcome": "success"}, func(v float64) bool { return v == 1 }, "1"},
		{"hearth_logins_total", map[string]string{"outcome": "failure"}, func(v float64) bool { return v == 1 }, "1"},
		{"hearth_tls_handshake_failures_total", map[string]string{"reason": "protocol_version"}, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"hearth_device_cert_seconds_left", map[string]string{"device": "pi"}, func(v float64) bool {
			return v > (720*time.Hour-time.Hour).Seconds() && v <= (720*time.Hour).Seconds()
		}, "about 720h"},
		{"hearth_gateway_cert_seconds_left", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"hearth_audit_append_seconds", map[string]string{"result": "ok"}, func(v float64) bool { return v >= 5 }, ">= 5 appends"},
		{"hearth_audit_batch_entries", nil, func(v float64) bool { return v >= 1 }, ">= 1 batch"},
		{"hearth_store_probe_seconds", nil, func(v float64) bool { return v >= 0 }, ">= 0"},
		{"hearth_store_pages_written_total", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"process_resident_memory_bytes", nil, func(v float64) bool { return v > 0 }, "> 0"},
	}
	// The handshake failure is logged by the server after the client gave
	// up: give it a moment.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		fams = scrape(t, maddr)
		if v, ok := value(fams, "hearth_tls_handshake_failures_total", map[string]string{"reason": "protocol_version"}); ok && v >= 1 || time.Now().After(deadline) {
			break
		}
	}
	for _, c := range checks {
		v, ok := value(fams, c.name, c.labels)
		if !ok || !c.ok(v) {
			t.Errorf("%s%v = %v (present %v), want %s", c.name, c.labels, v, ok, c.want)
		}
	}
	// Bounded cardinality: no label value is a client's path.
	for name, f := range fams {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if strings.Contains(l.GetValue(), "nowhere") || strings.Contains(l.GetValue(), "secretish") || strings.Contains(l.GetValue(), "alice") {
					t.Errorf("%s has label %s=%q, a value a client chose", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
}
