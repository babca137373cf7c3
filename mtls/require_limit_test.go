package mtls

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
)

const adminPath = "/.hearth/v1/admin/devices"

// adminHarness is a gateway whose Hearth handler is hearth's admin API
// behind Require(hearth:admin), served on a real TLS listener.
type adminHarness struct {
	*harness
	calls atomic.Int64 // requests the admin handler served
}

func newAdminHarness(t *testing.T, mods ...func(*GatewayOptions)) *adminHarness {
	t.Helper()
	ah := &adminHarness{}
	var admin atomic.Pointer[http.Handler]
	mods = append(mods, func(o *GatewayOptions) {
		o.Hearth = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			(*admin.Load()).ServeHTTP(w, r)
		})
	})
	ah.harness = newHarness(t, mods...)
	h := ah.gw.Require(authz.CapHearthAdmin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ah.calls.Add(1)
		io.WriteString(w, "admin api")
	}))
	admin.Store(&h)
	return ah
}

func TestRequireLimitRemote(t *testing.T) {
	clk := newTestClock()
	alice := &authz.Principal{ID: "user:alice", Kind: authz.KindUser, Method: authz.MethodToken, MFA: true, AuthTime: clk.now()}
	h := newAdminHarness(t, func(o *GatewayOptions) {
		o.TrustedNetworks = remoteOnly
		o.Now = clk.now
		o.Tokens = tokens{"good-token": alice}
		o.AnonBurst = 3
		o.AnonRefill = time.Minute
	})
	alice.Caps = h.caps(t, "system:admin")
	anon := h.client(t, nil, clientOpt{})
	get := func(auth string) result {
		t.Helper()
		var hdr http.Header
		if auth != "" {
			hdr = http.Header{"Authorization": {auth}}
		}
		return do(t, anon, "GET", h.url+adminPath, nil, hdr)
	}

	// Within the budget: every 401 is audited by Require.
	for i, auth := range []string{"", "Bearer nope", ""} {
		n := h.rec.count()
		if r := get(auth); r.status != http.StatusUnauthorized || r.resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("failure %d (%q) = %d %s, want 401 with WWW-Authenticate", i, auth, r.status, r.body)
		}
		evs := h.rec.since(n)
		if len(evs) != 1 || evs[0].Outcome != audit.OutcomeDeny || evs[0].Resource != adminPath ||
			evs[0].Meta["source"] != "require" || evs[0].Meta["capability"] != string(authz.CapHearthAdmin) || evs[0].Meta["throttled"] != "" {
			t.Fatalf("failure %d: audit entries %+v, want one require deny", i, evs)
		}
	}

	// Over it: 429 with Retry-After, exactly one aggregated entry, and the
	// admin handler never runs.
	n := h.rec.count()
	ev := expectThrottled(t, get(""), h.rec, n, "60")
	if ev.Name != audit.EventAuthzDecision || ev.Outcome != audit.OutcomeDeny || ev.Resource != adminPath ||
		!strings.HasPrefix(ev.Reason, "throttled:") || !strings.Contains(ev.Reason, "hearth:admin") ||
		ev.Meta["throttled"] != "true" || ev.Meta["retry_after"] != "1m0s" || ev.Meta["zone"] != string(authz.ZoneRemote) ||
		ev.Meta["source"] != "require" || ev.Meta["capability"] != string(authz.CapHearthAdmin) || ev.Meta["method"] != "GET" ||
		ev.Principal != "" || ev.Client == "" {
		t.Errorf("aggregated entry = %+v", ev)
	}
	if _, ok := ev.Meta["similar_unrecorded"]; ok {
		t.Errorf("first throttled entry has similar_unrecorded: %+v", ev.Meta)
	}

	// Further anonymous requests within 10 s: 429 and nothing in the log.
	n = h.rec.count()
	for _, auth := range []string{"", "Bearer nope", "Bearer "} {
		if r := get(auth); r.status != http.StatusTooManyRequests {
			t.Fatalf("throttled %q = %d %s, want 429", auth, r.status, r.body)
		}
	}
	if got := h.rec.count() - n; got != 0 {
		t.Fatalf("throttled refusals within 10 s wrote %d entries, want 0", got)
	}
	if got := h.calls.Load(); got != 0 {
		t.Fatalf("admin handler ran %d times for anonymous requests, want 0", got)
	}

	// A valid device or token from the same address is served and audited.
	laptop := h.ca.device(t, "laptop")
	if r := do(t, h.client(t, &laptop, clientOpt{}), "GET", h.url+adminPath, nil, nil); r.status != http.StatusOK || r.body != "admin api" {
		t.Fatalf("device from a throttled address = %d %s, want 200", r.status, r.body)
	}
	if ev := h.rec.last(); ev.Principal != "device:laptop" || ev.Outcome != audit.OutcomeAllow || ev.Meta["source"] != "require" {
		t.Errorf("device's entry = %+v", ev)
	}
	if r := get("Bearer good-token"); r.status != http.StatusOK || r.body != "admin api" {
		t.Fatalf("valid token from a throttled address = %d %s, want 200", r.status, r.body)
	}
	if ev := h.rec.last(); ev.Principal != "user:alice" || ev.Outcome != audit.OutcomeAllow {
		t.Errorf("token's entry = %+v", ev)
	}
	if got := h.calls.Load(); got != 2 {
		t.Fatalf("admin handler ran %d times, want 2", got)
	}

	// 10 s later the next refusal is recorded with the count left out.
	clk.advance(10 * time.Second)
	n = h.rec.count()
	if r := get(""); r.status != http.StatusTooManyRequests || r.resp.Header.Get("Retry-After") != "50" {
		t.Fatalf("after 10 s = %d Retry-After %q, want 429, 50", r.status, r.resp.Header.Get("Retry-After"))
	}
	if evs := h.rec.since(n); len(evs) != 1 || evs[0].Meta["similar_unrecorded"] != "3" || evs[0].Meta["retry_after"] != "50s" {
		t.Fatalf("second aggregated entry = %+v, want similar_unrecorded 3, retry_after 50s", evs)
	}

	// The aggregated entry is due: with the log down the answer is 503.
	clk.advance(10 * time.Second)
	h.rec.setFail(true)
	if r := get(""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("throttled with the log down = %d %s, want 503", r.status, r.body)
	}
	h.rec.setFail(false)
	if got := h.calls.Load(); got != 2 {
		t.Fatalf("admin handler ran %d times, want 2", got)
	}
}

func TestRequireLimitLANExempt(t *testing.T) {
	for _, tt := range []struct {
		name string
		mod  func(*GatewayOptions)
	}{
		{"default (loopback)", func(*GatewayOptions) {}},
		{"household network", func(o *GatewayOptions) {
			o.TrustedNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("192.168.0.0/16")}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newAdminHarness(t, tt.mod, func(o *GatewayOptions) { o.AnonBurst = 1 })
			c := h.client(t, nil, clientOpt{})
			for i := range 10 {
				auth := http.Header{"Authorization": {fmt.Sprintf("Bearer wrong-%d", i)}}
				if r := do(t, c, "GET", h.url+adminPath, nil, auth); r.status != http.StatusUnauthorized {
					t.Fatalf("lan request %d = %d %s, want 401", i, r.status, r.body)
				}
			}
			if got := h.rec.count(); got != 10 {
				t.Fatalf("%d entries, want 10 (every lan 401 audited)", got)
			}
			if n := h.gw.anon.Len(); n != 0 {
				t.Fatalf("limiter tracks %d lan addresses, want 0", n)
			}
		})
	}
}

// The admin socket's requests always carry the local principal: they never
// touch the budget, whatever their peer address looks like.
func TestRequireLimitAdminSocketExempt(t *testing.T) {
	g := newTestGateway(t, &recorder{}, func(o *GatewayOptions) { o.AnonBurst = 1 })
	var calls atomic.Int64
	h := g.LocalPrincipal(g.Require(authz.CapHearthAdmin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
	})))
	dir, err := os.MkdirTemp("", "hearth-sock") // short: unix socket paths are limited to ~104 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	t.Cleanup(c.CloseIdleConnections)
	for i := range 5 {
		if r := do(t, c, "GET", "http://hearth"+adminPath, nil, nil); r.status != http.StatusOK {
			t.Fatalf("socket request %d = %d %s, want 200", i, r.status, r.body)
		}
	}
	if calls.Load() != 5 || g.anon.Len() != 0 {
		t.Fatalf("admin handler ran %d times (want 5), limiter tracks %d addresses (want 0)", calls.Load(), g.anon.Len())
	}
}

// An address has one budget for agent paths and admin paths together.
func TestRequireLimitSharedWithAgentPaths(t *testing.T) {
	const burst = 4
	for _, tt := range []struct {
		name      string
		spend     []string // paths of the failing requests within the budget
		throttled []string // paths that must then answer 429
	}{
		{"agent then admin", []string{"/api/status", "/api/status", "/api/status", "/api/status"}, []string{adminPath, "/api/status"}},
		{"admin then agent", []string{adminPath, adminPath, adminPath, adminPath}, []string{"/api/status", adminPath}},
		{"alternating", []string{adminPath, "/api/status", adminPath, "/api/status"}, []string{adminPath, "/api/status"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newTestClock()
			h := newAdminHarness(t, func(o *GatewayOptions) {
				o.TrustedNetworks = remoteOnly
				o.Now = clk.now
				o.AnonBurst = burst
				o.AnonRefill = time.Minute
			})
			c := h.client(t, nil, clientOpt{})
			for i, p := range tt.spend {
				if r := do(t, c, "GET", h.url+p, nil, nil); r.status != http.StatusUnauthorized {
					t.Fatalf("failure %d on %s = %d %s, want 401", i, p, r.status, r.body)
				}
			}
			if got := h.rec.count(); got != burst {
				t.Fatalf("%d entries, want %d", got, burst)
			}
			for _, p := range tt.throttled {
				if r := do(t, c, "GET", h.url+p, nil, nil); r.status != http.StatusTooManyRequests {
					t.Fatalf("%s after the shared budget = %d %s, want 429", p, r.status, r.body)
				}
			}
			// One aggregated entry for the address, whichever path came first.
			if got := h.rec.count(); got != burst+1 {
				t.Fatalf("%d entries, want %d (one aggregated)", got, burst+1)
			}
			if ev := h.rec.last(); ev.Meta["throttled"] != "true" || ev.Resource != tt.throttled[0] {
				t.Errorf("aggregated entry = %+v, want throttled on %s", ev, tt.throttled[0])
			}
			if h.calls.Load() != 0 || h.up.len() != 0 {
				t.Fatalf("admin handler ran %d times, upstream saw %d, want 0, 0", h.calls.Load(), h.up.len())
			}
		})
	}
}
