package mtls

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
)

// testClock is an injected clock the test moves by hand. It starts at the
// real time because the test certificates are valid for an hour around it.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now()} }

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// count is the number of recorded events.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// since returns the events recorded after the first n.
func (r *recorder) since(n int) []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Event(nil), r.events[n:]...)
}

var remoteOnly = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} // 127.0.0.1 is remote

func TestAnonLimitRemote(t *testing.T) {
	clk := newTestClock()
	alice := &authz.Principal{ID: "user:alice", Kind: authz.KindUser, Method: authz.MethodToken, AuthTime: time.Now()}
	h := newHarness(t, func(o *GatewayOptions) {
		o.TrustedNetworks = remoteOnly
		o.Now = clk.now
		o.Tokens = tokens{"good-token": alice}
		o.AnonBurst = 5
		o.AnonRefill = time.Minute
	})
	alice.Caps = h.caps(t, "system:read")
	anon := h.client(t, nil, clientOpt{})
	get := func(auth string) result {
		t.Helper()
		var hdr http.Header
		if auth != "" {
			hdr = http.Header{"Authorization": {auth}}
		}
		return do(t, anon, "GET", h.url+"/api/status", nil, hdr)
	}

	// Within the budget: every 401 is audited, whatever the failure.
	for i, auth := range []string{"", "Bearer nope", "Bearer ", "Basic YWxpY2U6cHc=", ""} {
		n := h.rec.count()
		if r := get(auth); r.status != http.StatusUnauthorized {
			t.Fatalf("failure %d (%q) = %d %s, want 401", i, auth, r.status, r.body)
		}
		evs := h.rec.since(n)
		if len(evs) != 1 || evs[0].Outcome != audit.OutcomeDeny || !strings.HasPrefix(evs[0].Reason, "not authenticated") {
			t.Fatalf("failure %d: audit entries %+v, want one deny", i, evs)
		}
	}

	// Over it: 429 with Retry-After, one aggregated entry.
	n := h.rec.count()
	ev := expectThrottled(t, get(""), h.rec, n, "60")
	if ev.Name != audit.EventAuthzDecision || ev.Outcome != audit.OutcomeDeny || ev.Resource != "/api/status" ||
		!strings.HasPrefix(ev.Reason, "throttled:") || ev.Meta["throttled"] != "true" || ev.Meta["retry_after"] != "1m0s" ||
		ev.Meta["zone"] != string(authz.ZoneRemote) || ev.Principal != "" {
		t.Errorf("aggregated entry = %+v", ev)
	}
	if _, ok := ev.Meta["similar_unrecorded"]; ok {
		t.Errorf("first throttled entry has similar_unrecorded: %+v", ev.Meta)
	}

	// Further failures within 10 s: 429 and nothing in the log.
	n = h.rec.count()
	for _, auth := range []string{"", "Bearer nope", "Bearer ", "Bearer also-wrong"} {
		if r := get(auth); r.status != http.StatusTooManyRequests {
			t.Fatalf("throttled %q = %d %s, want 429", auth, r.status, r.body)
		}
	}
	if got := h.rec.count() - n; got != 0 {
		t.Fatalf("throttled refusals within 10 s wrote %d entries, want 0", got)
	}
	if got := h.up.len(); got != 0 {
		t.Fatalf("upstream saw %d requests, want 0", got)
	}

	// Authenticated requests from the same address are served and audited.
	pi := h.ca.device(t, "kitchen-pi")
	if r := do(t, h.client(t, &pi, clientOpt{}), "GET", h.url+"/api/status", nil, nil); r.status != http.StatusOK {
		t.Fatalf("device from a throttled address = %d %s, want 200", r.status, r.body)
	}
	if ev := h.rec.last(); ev.Principal != "device:kitchen-pi" || ev.Outcome != audit.OutcomeAllow {
		t.Errorf("device's entry = %+v", ev)
	}
	if r := get("Bearer good-token"); r.status != http.StatusOK {
		t.Fatalf("valid token from a throttled address = %d %s, want 200", r.status, r.body)
	}
	if ev := h.rec.last(); ev.Principal != "user:alice" || ev.Outcome != audit.OutcomeAllow {
		t.Errorf("token's entry = %+v", ev)
	}
	if got := h.up.len(); got != 2 {
		t.Fatalf("upstream saw %d requests, want 2", got)
	}

	// 10 s later the next refusal is recorded with the count left out.
	clk.advance(10 * time.Second)
	n = h.rec.count()
	if ev := expectThrottled(t, get(""), h.rec, n, "50"); ev.Meta["similar_unrecorded"] != "4" || ev.Meta["retry_after"] != "50s" {
		t.Fatalf("second aggregated entry = %+v, want similar_unrecorded 4, retry_after 50s", ev)
	}

	// Once a token has refilled, one more failure is allowed and audited.
	clk.advance(50 * time.Second)
	n = h.rec.count()
	if r := get("Bearer nope"); r.status != http.StatusUnauthorized {
		t.Fatalf("after refill = %d %s, want 401", r.status, r.body)
	}
	if evs := h.rec.since(n); len(evs) != 1 || !strings.HasPrefix(evs[0].Reason, "not authenticated") {
		t.Fatalf("after refill: entries %+v, want one 401 entry", evs)
	}
	if r := get(""); r.status != http.StatusTooManyRequests {
		t.Fatalf("after the refilled token = %d, want 429", r.status)
	}
}

func TestAnonLimitDefaults(t *testing.T) {
	clk := newTestClock()
	h := newHarness(t, func(o *GatewayOptions) {
		o.TrustedNetworks = remoteOnly
		o.Now = clk.now
	})
	if cfg := h.gw.anon.Config(); cfg.Burst != DefaultAnonBurst || cfg.Refill != DefaultAnonRefill {
		t.Fatalf("limiter = burst %v refill %v, want %d, %v", cfg.Burst, cfg.Refill, DefaultAnonBurst, DefaultAnonRefill)
	}
	c := h.client(t, nil, clientOpt{})
	for i := range DefaultAnonBurst {
		if r := do(t, c, "GET", h.url+"/api/status", nil, nil); r.status != http.StatusUnauthorized {
			t.Fatalf("request %d = %d, want 401", i, r.status)
		}
	}
	if got := h.rec.count(); got != DefaultAnonBurst {
		t.Fatalf("%d entries, want %d", got, DefaultAnonBurst)
	}
	r := do(t, c, "GET", h.url+"/api/status", nil, nil)
	if r.status != http.StatusTooManyRequests || r.resp.Header.Get("Retry-After") != "3" {
		t.Fatalf("request %d = %d Retry-After %q, want 429, 3", DefaultAnonBurst, r.status, r.resp.Header.Get("Retry-After"))
	}
	clk.advance(DefaultAnonRefill)
	if r := do(t, c, "GET", h.url+"/api/status", nil, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("after %v = %d, want 401", DefaultAnonRefill, r.status)
	}
}

func TestAnonLimitLANExempt(t *testing.T) {
	for _, tt := range []struct {
		name string
		nets []netip.Prefix
	}{
		{"default (loopback)", nil},
		{"household network", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("192.168.0.0/16")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(o *GatewayOptions) {
				o.TrustedNetworks = tt.nets
				o.AnonBurst = 2
			})
			c := h.client(t, nil, clientOpt{})
			for i := range 10 {
				auth := http.Header{"Authorization": {fmt.Sprintf("Bearer wrong-%d", i)}}
				if r := do(t, c, "GET", h.url+"/api/status", nil, auth); r.status != http.StatusUnauthorized {
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

func TestAnonLimitAuditFailureFailsClosed(t *testing.T) {
	h := newHarness(t, func(o *GatewayOptions) {
		o.TrustedNetworks = remoteOnly
		o.AnonBurst = 1
	})
	c := h.client(t, nil, clientOpt{})
	if r := do(t, c, "GET", h.url+"/api/status", nil, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("first = %d, want 401", r.status)
	}
	h.rec.setFail(true)
	if r := do(t, c, "GET", h.url+"/api/status", nil, nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("throttled with the log down = %d, want 503 (its entry is due)", r.status)
	}
}

// expectThrottled checks that r is a 429 with Retry-After retry and a
// "throttled" JSON code, and that exactly one (aggregated) audit entry was
// written since the recorder held n; it returns that entry.
func expectThrottled(t *testing.T, r result, rec *recorder, n int, retry string) audit.Event {
	t.Helper()
	if r.status != http.StatusTooManyRequests || r.resp.Header.Get("Retry-After") != retry || !strings.Contains(r.body, `"throttled"`) {
		t.Fatalf("over budget = %d Retry-After %q %s, want 429, %s, throttled", r.status, r.resp.Header.Get("Retry-After"), r.body, retry)
	}
	evs := rec.since(n)
	if len(evs) != 1 {
		t.Fatalf("throttled refusal wrote %d entries, want 1: %+v", len(evs), evs)
	}
	return evs[0]
}
