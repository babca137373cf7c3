package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
)

func newTestGateway(t testing.TB, rec audit.Recorder, mods ...func(*GatewayOptions)) *Gateway {
	t.Helper()
	opts := GatewayOptions{
		Policy: testPolicy(t),
		Audit:  rec,
		Routes: DefaultRoutes(),
		Now:    func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) },
	}
	for _, m := range mods {
		m(&opts)
	}
	g, err := NewGateway(opts)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestRequire(t *testing.T) {
	rec := &recorder{}
	g := newTestGateway(t, rec)
	admin := testPolicy(t).All()
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "admin api") })
	h := g.Require(authz.CapHearthAdmin, inner)
	now := g.now()
	tests := []struct {
		name string
		p    *authz.Principal
		fail bool
		want int
	}{
		{"no principal", nil, false, 401},
		{"read device", &authz.Principal{ID: "device:pi", Kind: authz.KindDevice, Method: authz.MethodDevice, Zone: authz.ZoneLAN, Caps: []authz.Capability{"status"}}, false, 403},
		{"password token from remote", &authz.Principal{ID: "user:alice", Kind: authz.KindUser, Method: authz.MethodToken, Zone: authz.ZoneRemote, Caps: admin, AuthTime: now}, false, 403},
		{"mfa token", &authz.Principal{ID: "user:alice", Kind: authz.KindUser, Method: authz.MethodToken, Zone: authz.ZoneRemote, Caps: admin, AuthTime: now, MFA: true}, false, 200},
		{"local", NewLocalPrincipal(testPolicy(t), now), false, 200},
		{"local but the log is down", NewLocalPrincipal(testPolicy(t), now), true, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.setFail(tt.fail)
			req := httptest.NewRequest("POST", "/.hearth/v1/admin/devices", nil)
			req = req.WithContext(authz.WithPrincipal(req.Context(), tt.p))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tt.want {
				t.Fatalf("status = %d %s, want %d", w.Code, w.Body, tt.want)
			}
			if tt.want == 200 {
				if w.Body.String() != "admin api" {
					t.Errorf("body = %q", w.Body)
				}
			} else {
				var body struct{ Code, Capability, Error string }
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || (tt.want != 503 && body.Capability != "hearth:admin") {
					t.Errorf("body = %s (%v)", w.Body, err)
				}
			}
			if tt.fail {
				return
			}
			ev := rec.last()
			wantOutcome := audit.OutcomeDeny
			if tt.want == 200 {
				wantOutcome = audit.OutcomeAllow
			}
			if ev.Name != audit.EventAuthzDecision || ev.Outcome != wantOutcome || ev.Meta["capability"] != "hearth:admin" || ev.Resource != "/.hearth/v1/admin/devices" {
				t.Errorf("audit = %+v", ev)
			}
		})
	}
}

func TestLocalPrincipal(t *testing.T) {
	g := newTestGateway(t, &recorder{})
	var got *authz.Principal
	var hdr http.Header
	h := g.LocalPrincipal(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = authz.PrincipalFrom(r.Context())
		hdr = r.Header
	}))
	req := httptest.NewRequest("GET", "/.hearth/v1/admin/devices", nil)
	req.Header.Set("X-Hearth-Principal", "device:evil")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if got == nil || got.ID != "user:local" || got.Method != authz.MethodLocal || got.Zone != authz.ZoneLAN || len(got.Caps) != len(testPolicy(t).All()) {
		t.Fatalf("principal = %+v", got)
	}
	if hdr.Get("X-Hearth-Principal") != "" {
		t.Errorf("client identity header survived")
	}
	// The same API handler works on the admin socket.
	w := httptest.NewRecorder()
	g.LocalPrincipal(g.APIHandler()).ServeHTTP(w, httptest.NewRequest("GET", "/.hearth/v1/whoami", nil))
	if !strings.Contains(w.Body.String(), `"principal":"user:local"`) {
		t.Errorf("whoami on the socket = %s", w.Body)
	}
}

func TestForwardedForDoesNotChangeZone(t *testing.T) {
	h := newHarness(t, func(o *GatewayOptions) {
		o.TrustedNetworks = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	})
	pi := h.ca.device(t, "kitchen-pi")
	r := do(t, h.client(t, &pi, clientOpt{}), "GET", h.url+"/.hearth/v1/whoami", nil,
		http.Header{"X-Forwarded-For": {"192.0.2.7"}, "X-Real-Ip": {"192.0.2.7"}, "Forwarded": {"for=192.0.2.7"}})
	if !strings.Contains(r.body, `"zone":"remote"`) {
		t.Errorf("whoami = %s, want zone remote despite X-Forwarded-For", r.body)
	}
}

func TestNewGatewayRejects(t *testing.T) {
	for name, o := range map[string]GatewayOptions{
		"no policy":    {Audit: audit.Discard{}},
		"no audit":     {Policy: testPolicy(t)},
		"bad route":    {Policy: testPolicy(t), Audit: audit.Discard{}, Routes: []Route{{Path: "/x", Capability: "status"}}},
		"bad upstream": {Policy: testPolicy(t), Audit: audit.Discard{}, Upstream: &url.URL{Scheme: "unix", Path: "/x"}},
	} {
		if _, err := NewGateway(o); err == nil {
			t.Errorf("NewGateway(%s) accepted", name)
		}
	}
}

// cannedTransport answers every request at once, so that the benchmarks
// below measure the gateway, not a network.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{
		StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Length": {"2"}}, ContentLength: 2,
		Body: io.NopCloser(strings.NewReader("ok")), Request: r,
	}, nil
}

// dirFunc is a DeviceDirectory from a function.
type dirFunc func(*x509.Certificate) (string, []authz.Capability, error)

func (f dirFunc) LookupDevice(_ context.Context, c *x509.Certificate) (string, []authz.Capability, error) {
	return f(c)
}

// BenchmarkServeHTTP is the gateway's per-request cost in process
// (normalise, authenticate, route, decide, audit, proxy to a canned
// transport) next to a bare httputil.ReverseProxy on the same transport.
func BenchmarkServeHTTP(b *testing.B) {
	ca := newTestCA(b, "bench")
	leaf := ca.device(b, "kitchen-pi").Leaf
	state := &tls.ConnectionState{Version: tls.VersionTLS13, PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.cert}}}
	policy := testPolicy(b)
	caps, _ := policy.Expand([]string{"system:read"})
	g, err := NewGateway(GatewayOptions{
		Policy: policy, Audit: audit.Discard{}, Routes: DefaultRoutes(),
		Devices:  dirFunc(func(*x509.Certificate) (string, []authz.Capability, error) { return "kitchen-pi", caps, nil }),
		Upstream: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}, Transport: cannedTransport{},
	})
	if err != nil {
		b.Fatal(err)
	}
	bare := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(&url.URL{Scheme: "http", Host: "127.0.0.1:1"}) },
		Transport: cannedTransport{},
	}
	run := func(b *testing.B, h http.Handler, path string, want int) {
		b.ReportAllocs()
		for b.Loop() {
			req := httptest.NewRequest("GET", path, nil)
			req.RemoteAddr = "127.0.0.1:5555"
			req.TLS = state
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != want {
				b.Fatalf("status %d", w.Code)
			}
		}
	}
	b.Run("bare-reverseproxy", func(b *testing.B) { run(b, bare, "/api/conversations/42", 200) })
	bare.BufferPool = bufferPool{}
	b.Run("bare-reverseproxy-pooled", func(b *testing.B) { run(b, bare, "/api/conversations/42", 200) })
	b.Run("gateway-allow", func(b *testing.B) { run(b, g, "/api/conversations/42", 200) })
	b.Run("gateway-deny", func(b *testing.B) { run(b, g, "/api/plugins/x", 403) })
	b.Run("request-only", func(b *testing.B) {
		run(b, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), "/api/conversations/42", 200)
	})
}
