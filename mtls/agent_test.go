package mtls

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
)

// openClawAgent is the profile's gateway.agent section, as hearth.yaml
// carries it.
func openClawAgent() Agent {
	return Agent{
		Profile:      "openclaw",
		ScopesHeader: "x-openclaw-scopes",
		Scopes: map[string][]string{
			"conversations:read": {"operator.read"},
			"settings:modify":    {"operator.write"},
			"hearth:admin":       {"operator.admin", "operator.pairing"},
		},
		LocalClientAddress: "192.0.0.8",
	}
}

func TestAgentHeaders(t *testing.T) {
	h := newHarness(t, func(o *GatewayOptions) { o.Agent = openClawAgent() })
	pi := h.ca.device(t, "kitchen-pi") // system:read
	laptop := h.ca.device(t, "laptop") // system:admin
	spoof := http.Header{
		"X-Real-Ip":            {"10.0.0.1"},
		"True-Client-Ip":       {"10.0.0.2"},
		"Cf-Connecting-Ip":     {"10.0.0.3"},
		"Forwarded":            {"for=10.0.0.4"},
		"X-Forwarded-For":      {"10.0.0.5"},
		"X-Forwarded-Host":     {"evil.example"},
		"X-Forwarded-Proto":    {"http"},
		"X-Openclaw-Scopes":    {"operator.admin"},
		"X_Openclaw_Scopes":    {"operator.admin"},
		"X-Openclaw-Token":     {"guess"},
		"Tailscale-User-Login": {"owner@example.com"},
		"X-Hearth-Principal":   {"user:alice"},
	}
	for _, tc := range []struct {
		name   string
		cert   *tlsCert
		scopes string
	}{
		{"system:read", &pi, "operator.read"},
		{"system:admin", &laptop, "operator.admin,operator.pairing,operator.read,operator.write"},
	} {
		r := do(t, h.client(t, tc.cert, clientOpt{}), "GET", h.url+"/api/status", nil, spoof)
		if r.status != 200 {
			t.Fatalf("%s: GET /api/status = %d %s", tc.name, r.status, r.body)
		}
		got := h.up.lastReq().Header
		for k := range spoof {
			switch http.CanonicalHeaderKey(k) {
			case "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Openclaw-Scopes", "X-Hearth-Principal":
				continue // hearth's own values, checked below
			}
			if v, ok := got[http.CanonicalHeaderKey(k)]; ok {
				t.Errorf("%s: the agent got the client's %s: %q", tc.name, k, v)
			}
		}
		if v := got["X-Openclaw-Scopes"]; len(v) != 1 || v[0] != tc.scopes {
			t.Errorf("%s: x-openclaw-scopes = %q, want [%s]", tc.name, v, tc.scopes)
		}
		// The harness's clients are on loopback: attributed to 192.0.0.8.
		if v := got["X-Forwarded-For"]; len(v) != 1 || v[0] != "192.0.0.8" {
			t.Errorf("%s: X-Forwarded-For = %q, want [192.0.0.8]", tc.name, v)
		}
		if v := got.Get("X-Forwarded-Proto"); v != "https" {
			t.Errorf("%s: X-Forwarded-Proto = %q", tc.name, v)
		}
		if v := got.Get("X-Forwarded-Host"); v == "evil.example" {
			t.Errorf("%s: X-Forwarded-Host is the client's", tc.name)
		}
		if v := got.Get(HeaderPrincipal); !strings.HasPrefix(v, "device:") {
			t.Errorf("%s: principal = %q", tc.name, v)
		}
	}
}

// tlsCert keeps the table above short.
type tlsCert = tls.Certificate

// TestWebsocketClosedWhenScopesChange: OpenClaw fixes a session's scopes
// at the upgrade, so a narrowed grant closes the websocket (1008) and the
// reconnect carries the new set.
func TestWebsocketClosedWhenScopesChange(t *testing.T) {
	h := newHarness(t, func(o *GatewayOptions) {
		o.RecheckInterval = 100 * time.Millisecond
		o.Agent = openClawAgent()
	})
	laptop := h.ca.device(t, "laptop") // system:admin
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := strings.Replace(h.url, "https", "wss", 1) + "/ws"
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: h.client(t, &laptop, clientOpt{})})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if got := h.up.lastReq().Header.Get("X-Openclaw-Scopes"); !strings.Contains(got, "operator.admin") {
		t.Fatalf("upgrade scopes = %q", got)
	}
	time.Sleep(300 * time.Millisecond) // unchanged grants keep the socket open
	if err := ws.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatalf("socket closed with unchanged scopes: %v", err)
	}
	if _, _, err := ws.Read(ctx); err != nil {
		t.Fatalf("socket closed with unchanged scopes: %v", err)
	}
	h.dev.set("laptop", h.caps(t, "system:read")) // still allowed /ws (status)
	_, _, err = ws.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "scopes changed") {
		t.Errorf("after the grant narrowed: %v, want close 1008 (scopes changed)", err)
	}
	ws2, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: h.client(t, &laptop, clientOpt{})})
	if err != nil {
		t.Fatal(err)
	}
	ws2.CloseNow()
	if got := h.up.lastReq().Header.Get("X-Openclaw-Scopes"); got != "operator.read" {
		t.Errorf("reconnect scopes = %q, want operator.read", got)
	}
}

func TestForwardedForWithoutProfile(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	do(t, h.client(t, &pi, clientOpt{}), "GET", h.url+"/api/status", nil, http.Header{"X-Real-Ip": {"10.0.0.1"}})
	got := h.up.lastReq().Header
	if v := got.Get("X-Forwarded-For"); v != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the real loopback peer", v)
	}
	if got.Get("X-Real-Ip") != "" || got.Get("X-Openclaw-Scopes") != "" {
		t.Errorf("agent got %v", got)
	}
}

func TestScopesFollowTrustRules(t *testing.T) {
	policy := testPolicy(t)
	ap, err := compileAgent(openClawAgent(), policy)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caps, _ := policy.Expand([]string{"system:read", "system:write"})
	user := func(zone authz.Zone, mfa bool) *authz.Principal {
		return &authz.Principal{ID: "user:bob", Kind: authz.KindUser, Caps: caps, Method: authz.MethodToken, Zone: zone, AuthTime: now, MFA: mfa}
	}
	for _, tc := range []struct {
		name string
		pr   *authz.Principal
		want string
	}{
		// settings:modify needs a second factor for a token from remote.
		{"remote password-only token", user(authz.ZoneRemote, false), "operator.read"},
		{"remote token with a second factor", user(authz.ZoneRemote, true), "operator.read,operator.write"},
		{"lan token", user(authz.ZoneLAN, false), "operator.read,operator.write"},
		{"no capabilities", &authz.Principal{ID: "device:x", Kind: authz.KindDevice, Method: authz.MethodDevice, Zone: authz.ZoneLAN}, ""},
	} {
		if got := ap.scopesFor(policy, tc.pr, now); got != tc.want {
			t.Errorf("%s: scopes = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestAgentConfigRefused(t *testing.T) {
	policy := testPolicy(t)
	for _, a := range []Agent{
		{ScopesHeader: "bad header"},
		{Scopes: map[string][]string{"status": {"x"}}},                           // no header to carry them
		{ScopesHeader: "x-s", Scopes: map[string][]string{"system:read": {"x"}}}, // a bundle
		{ScopesHeader: "x-s", Scopes: map[string][]string{"status": {"a,b"}}},
		{LocalClientAddress: "127.0.0.2"},
		{LocalClientAddress: "::1"},
		{LocalClientAddress: "not-an-ip"},
		{StripHeaders: []string{"bad name*"}},
	} {
		if _, err := compileAgent(a, policy); err == nil {
			t.Errorf("compileAgent(%+v) = nil error", a)
		}
	}
}

func TestWebsocketRouteIsNotGET(t *testing.T) {
	h := newHarness(t, func(o *GatewayOptions) {
		o.Routes = append(testRoutes(), Route{Path: "/page", Methods: []string{"GET", "*"}, Capability: "status"})
	})
	pi := h.ca.device(t, "kitchen-pi")
	c := h.client(t, &pi, clientOpt{})
	// A plain GET of the websocket's path matches no GET route.
	if r := do(t, c, "GET", h.url+"/ws", nil, nil); r.status != 403 || !strings.Contains(r.body, "does not allow GET") {
		t.Errorf("plain GET /ws = %d %s, want 403", r.status, r.body)
	}
	// An upgrade on a GET (or "*") route is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, strings.Replace(h.url, "https", "wss", 1)+"/page", &websocket.DialOptions{HTTPClient: c})
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Errorf("upgrade on a GET route: %v, %v; want 403", resp, err)
	}
	if ev := h.rec.last(); ev.Meta["method"] != MethodWebsocket {
		t.Errorf("audit method = %q, want WEBSOCKET", ev.Meta["method"])
	}
	// Another protocol is not proxied at all.
	r := do(t, c, "GET", h.url+"/ws", nil, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c"}})
	if r.status != 400 {
		t.Errorf("Upgrade: h2c = %d, want 400", r.status)
	}
}

func TestRouteLimits(t *testing.T) {
	h := newHarness(t, func(o *GatewayOptions) {
		o.UpstreamTimeout = 200 * time.Millisecond
		o.Routes = []Route{
			{Path: "/api/upload", Methods: []string{"POST"}, Capability: "status", MaxBody: "3MiB"},
			{Path: "/api/status", Methods: []string{"POST"}, Capability: "status"},
			{Path: "/api/slow", Methods: []string{"GET"}, Capability: "status", Timeout: "3s"},
		}
	})
	pi := h.ca.device(t, "kitchen-pi")
	c := h.client(t, &pi, clientOpt{})
	body := bytes.Repeat([]byte("x"), 2<<20)
	if r := do(t, c, "POST", h.url+"/api/upload", bytes.NewReader(body), nil); r.status != 200 {
		t.Errorf("2 MiB to a 3 MiB route = %d %s", r.status, r.body)
	}
	if r := do(t, c, "POST", h.url+"/api/status", bytes.NewReader(body), nil); r.status != 413 || !strings.Contains(r.body, "1048576") {
		t.Errorf("2 MiB to a default route = %d %s, want 413", r.status, r.body)
	}
	big := bytes.Repeat([]byte("x"), 4<<20)
	if r := do(t, c, "POST", h.url+"/api/upload", &onlyReader{bytes.NewReader(big)}, nil); r.status != 413 || !strings.Contains(r.body, "3145728") {
		t.Errorf("4 MiB chunked to a 3 MiB route = %d %s, want 413", r.status, r.body)
	}
	// /api/slow answers after 5 s: the route's 3 s gives 504 after 3 s,
	// not after the gateway's 200 ms.
	start := time.Now()
	r := do(t, c, "GET", h.url+"/api/slow", nil, nil)
	if d := time.Since(start); r.status != 504 || d < 3*time.Second || d > 4500*time.Millisecond {
		t.Errorf("slow route = %d after %v, want 504 after about 3s", r.status, d)
	}
}

// onlyReader hides a body's length, so that it is sent chunked.
type onlyReader struct{ r *bytes.Reader }

func (o *onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestProbesAuditedInAggregate(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clock := &now
	h := newHarness(t, func(o *GatewayOptions) {
		o.Now = func() time.Time { return *clock }
		o.Agent = openClawAgent()
		o.Routes = append(testRoutes(), Route{Path: "/healthz", Methods: []string{"GET"}, Probe: true})
	})
	anon := h.client(t, nil, clientOpt{})
	pi := h.ca.device(t, "kitchen-pi")
	dev := h.client(t, &pi, clientOpt{})
	before := len(h.rec.events)
	for i := 0; i < 5; i++ {
		c := anon
		if i == 2 {
			c = dev // a credential changes nothing: the agent sees none
		}
		if r := do(t, c, "GET", h.url+"/healthz", nil, http.Header{"Authorization": {"Bearer nope"}}); r.status != 200 {
			t.Fatalf("probe %d = %d %s", i, r.status, r.body)
		}
		got := h.up.lastReq().Header
		if got.Get(HeaderPrincipal) != "" || got.Get("Authorization") != "" || got["X-Openclaw-Scopes"] == nil || got.Get("X-Openclaw-Scopes") != "" {
			t.Errorf("probe %d reached the agent with %v", i, got)
		}
	}
	h.rec.mu.Lock()
	probes := h.rec.events[before:]
	h.rec.mu.Unlock()
	if len(probes) != 1 || probes[0].Meta["probe"] != "true" || probes[0].Outcome != audit.OutcomeAllow {
		t.Fatalf("5 probes wrote %d entries (%+v), want 1", len(probes), probes)
	}
	now = now.Add(DefaultProbeAuditEvery)
	do(t, anon, "GET", h.url+"/healthz", nil, nil)
	if ev := h.rec.last(); ev.Meta["probe"] != "true" || ev.Meta["similar_unrecorded"] != "4" {
		t.Errorf("next window's entry = %+v, want similar_unrecorded 4", ev)
	}
	// A probe refuses bodies and other methods by its route.
	if r := do(t, anon, "POST", h.url+"/healthz", strings.NewReader("x"), nil); r.status != 401 {
		t.Errorf("POST to a probe without credentials = %d, want 401", r.status)
	}
	// The audit log down: a probe due to be recorded is refused.
	h.rec.setFail(true)
	now = now.Add(DefaultProbeAuditEvery)
	if r := do(t, anon, "GET", h.url+"/healthz", nil, nil); r.status != 503 {
		t.Errorf("probe with the audit log down = %d, want 503", r.status)
	}
}

func TestProbeRouteChecks(t *testing.T) {
	for _, r := range []Route{
		{Path: "/h", Methods: []string{"POST"}, Probe: true},
		{Path: "/h", Methods: []string{"GET"}, Probe: true, Capability: "status"},
		{Path: "/h", Methods: []string{"POST"}, Capability: "status", MaxBody: "0"},
		{Path: "/h", Methods: []string{"POST"}, Capability: "status", MaxBody: "12 parsecs"},
		{Path: "/h", Methods: []string{"POST"}, Capability: "status", Timeout: "-1s"},
	} {
		if _, err := compileRoutes([]Route{r}, testPolicy(t)); err == nil {
			t.Errorf("compileRoutes(%+v) = nil error", r)
		}
	}
	for in, want := range map[string]int64{"1": 1, "512KiB": 512 << 10, "32MiB": 32 << 20, "1 GiB": 1 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

// TestCloseFrameAtBoundary: a close frame never lands inside one of the
// agent's frames.
func TestCloseFrameAtBoundary(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	c := &wsCloser{}
	wc := &wsConn{Conn: a}
	c.conn = wc
	frame := append([]byte{0x81, 126, 0x01, 0x00}, bytes.Repeat([]byte("y"), 256)...) // text, 256 bytes
	got := make(chan []byte)
	go func() {
		var buf bytes.Buffer
		tmp := make([]byte, 512)
		for {
			n, err := b.Read(tmp)
			buf.Write(tmp[:n])
			if err != nil || buf.Len() >= len(frame)+4+len("hearth: bye") {
				got <- buf.Bytes()
				return
			}
		}
	}()
	if _, err := wc.Write(frame[:100]); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.close(closePolicyViolation, "hearth: bye", 5*time.Second); close(done) }()
	time.Sleep(50 * time.Millisecond)
	if _, err := wc.Write(frame[100:]); !errors.Is(err, errClosedByHearth) {
		t.Errorf("write finishing the frame: %v, want errClosedByHearth", err)
	}
	<-done
	out := <-got
	want := append(append([]byte{}, frame...), closeFrame(closePolicyViolation, "hearth: bye")...)
	if !bytes.Equal(out, want) {
		t.Errorf("client got %x\nwant %x", out, want)
	}
	if _, err := wc.Write([]byte{0x81, 0}); !errors.Is(err, errClosedByHearth) {
		t.Errorf("write after close: %v", err)
	}
}

func TestCloseFrameReason(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	f := closeFrame(1008, long)
	if len(f) > 2+125 || f[1] != byte(len(f)-2) || !utf8.Valid(f[4:]) {
		t.Errorf("closeFrame(long) = len %d, payload len byte %d, valid %v", len(f), f[1], utf8.Valid(f[4:]))
	}
	if f[2] != 0x03 || f[3] != 0xf0 {
		t.Errorf("code bytes %x, want 03f0 (1008)", f[2:4])
	}
}

// FuzzFrameTracker splits a stream of frames at arbitrary points and
// checks that the tracker finds every boundary a whole-stream parse finds.
func FuzzFrameTracker(f *testing.F) {
	f.Add([]byte{0x81, 0x02, 'h', 'i', 0x88, 0x00}, uint8(1))
	f.Add(append([]byte{0x82, 126, 0x00, 0x05}, "abcde"...), uint8(3))
	f.Add(append([]byte{0x81, 0x85, 1, 2, 3, 4}, "hello"...), uint8(2))
	f.Add([]byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 1, 'z'}, uint8(5))
	f.Fuzz(func(t *testing.T, stream []byte, step uint8) {
		var whole frameTracker
		var bounds []int
		for i := 0; i < len(stream); {
			i += whole.consume(stream[i:])
			if whole.atBoundary() {
				bounds = append(bounds, i)
			}
		}
		var split frameTracker
		var got []int
		n := int(step%16) + 1
		pos := 0
		for pos < len(stream) {
			end := min(pos+n, len(stream))
			chunk := stream[pos:end]
			for len(chunk) > 0 {
				k := split.consume(chunk)
				chunk = chunk[k:]
				pos += k
				if split.atBoundary() {
					got = append(got, pos)
				}
			}
		}
		if !equalInts(got, bounds) {
			t.Fatalf("split by %d: boundaries %v, whole stream %v", n, got, bounds)
		}
	})
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHeaderMatcher(t *testing.T) {
	m := newHeaderMatcher([]string{"X-Real-IP", "X-Forwarded-*"})
	for name, want := range map[string]bool{
		"X-Real-Ip": true, "x-real-ip": true, "X_REAL_IP": true, "X-Real-Ip2": false, "X-Real": false,
		"X-Forwarded-For": true, "x_forwarded_host": true, "X-Forwarded": false, "X-Forwardedx": false,
	} {
		if got := m.match(name); got != want {
			t.Errorf("match(%q) = %v, want %v", name, got, want)
		}
	}
	h := http.Header{"X-Forwarded-For": {"1"}, "Accept": {"*/*"}}
	if n := testing.AllocsPerRun(100, func() { m.match("X-Forwarded-For"); m.match("Accept") }); n != 0 {
		t.Errorf("match allocates %v times", n)
	}
	m.strip(h)
	if len(h) != 1 || h.Get("Accept") == "" {
		t.Errorf("strip left %v", h)
	}
}
