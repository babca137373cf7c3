package mtls

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
)

type harness struct {
	ca      *testCA
	policy  *authz.Policy
	dev     *devices
	rec     *recorder
	up      *upstreamLog
	gw      *Gateway
	url     string
	release chan struct{} // lets the SSE handler finish

	mu         sync.Mutex
	hearthSeen []*authz.Principal
}

func testRoutes() []Route {
	return append(DefaultRoutes(),
		Route{Path: "/ws", Methods: []string{MethodWebsocket}, Capability: "status"},
		Route{Path: "/api/events/*", Methods: []string{"GET"}, Capability: "conversations:read"},
		Route{Path: "/api/slow", Methods: []string{"GET"}, Capability: "status"},
		Route{Path: "/api/upload", Methods: []string{"POST"}, Capability: "status"},
	)
}

func newHarness(t *testing.T, mods ...func(*GatewayOptions)) *harness {
	t.Helper()
	policy, err := authz.New(authz.Config{})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		ca:      newTestCA(t, "hearth test CA"),
		policy:  policy,
		dev:     &devices{caps: map[string][]authz.Capability{}},
		rec:     &recorder{},
		up:      &upstreamLog{},
		release: make(chan struct{}),
	}
	h.dev.set("kitchen-pi", h.caps(t, "system:read"))
	h.dev.set("laptop", h.caps(t, "system:admin"))

	upMux := http.NewServeMux()
	upMux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		h.up.add(r)
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	})
	upMux.HandleFunc("/api/events/stream", func(w http.ResponseWriter, r *http.Request) {
		h.up.add(r)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-h.release:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
		}
		fmt.Fprint(w, "data: second\n\n")
	})
	upMux.HandleFunc("/api/slow", func(w http.ResponseWriter, r *http.Request) {
		h.up.add(r)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	upMux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.up.add(r)
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "agent saw %s %s (%d bytes)", r.Method, r.URL.Path, n)
	})
	upSrv := httptest.NewServer(upMux)
	t.Cleanup(upSrv.Close)
	upURL, _ := url.Parse(upSrv.URL)

	hearth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.hearthSeen = append(h.hearthSeen, authz.PrincipalFrom(r.Context()))
		h.mu.Unlock()
		fmt.Fprintf(w, "hearth mux: %s", r.URL.Path)
	})
	opts := GatewayOptions{
		Policy:   policy,
		Devices:  h.dev,
		Tokens:   tokens{},
		Audit:    h.rec,
		Routes:   testRoutes(),
		Upstream: upURL,
		Hearth:   hearth,
	}
	for _, m := range mods {
		m(&opts)
	}
	gw, err := NewGateway(opts)
	if err != nil {
		t.Fatalf("NewGateway: %v", err)
	}
	h.gw = gw
	srvCert := h.ca.server(t)
	srv := gw.Server(ServerTLSConfig(&srvCert, h.ca.pool))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	h.url = "https://" + ln.Addr().String()
	return h
}

func (h *harness) caps(t testing.TB, names ...string) []authz.Capability {
	cs, err := h.policy.Expand(names)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

type clientOpt struct {
	h2      bool
	cache   tls.ClientSessionCache
	noCerts bool
}

func (h *harness) tlsConfig(cert *tls.Certificate, o clientOpt) *tls.Config {
	cfg := &tls.Config{RootCAs: h.ca.pool, ClientSessionCache: o.cache}
	if cert != nil {
		// Always send the certificate, even when it does not chain to a
		// CA the server names (crypto/tls clients otherwise stay silent).
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return cfg
}

func (h *harness) client(t *testing.T, cert *tls.Certificate, o clientOpt) *http.Client {
	t.Helper()
	var p http.Protocols
	if o.h2 {
		p.SetHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	tr := &http.Transport{TLSClientConfig: h.tlsConfig(cert, o), Protocols: &p, MaxConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

type result struct {
	status int
	body   string
	resp   *http.Response
}

func do(t *testing.T, c *http.Client, method, u string, body io.Reader, hdr http.Header) result {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, string(b), resp}
}

func TestCapabilityRouting(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	laptop := h.ca.device(t, "laptop")
	tests := []struct {
		name   string
		cert   *tls.Certificate
		method string
		path   string
		want   int
		cap    string
	}{
		{"read device: status", &pi, "GET", "/api/status", 200, ""},
		{"read device: HEAD status", &pi, "HEAD", "/api/status", 200, ""},
		{"read device: conversations", &pi, "GET", "/api/conversations/42", 200, ""},
		{"read device: conversations root", &pi, "GET", "/api/conversations", 200, ""},
		{"read device: settings", &pi, "GET", "/api/settings/model", 403, "settings:modify"},
		{"read device: change settings", &pi, "PUT", "/api/settings/model", 403, "settings:modify"},
		{"read device: install plugin", &pi, "POST", "/api/plugins/install", 403, "plugins:install"},
		{"read device: unmapped route", &pi, "GET", "/api/secrets", 403, ""},
		{"read device: unmapped method", &pi, "DELETE", "/api/status", 403, ""},
		{"read device: prefix is on segments", &pi, "GET", "/api/conversationsX", 403, ""},
		{"admin device: settings", &laptop, "PUT", "/api/settings/model", 200, ""},
		{"admin device: plugins", &laptop, "POST", "/api/plugins/install", 200, ""},
		{"admin device: unmapped route", &laptop, "GET", "/api/secrets", 403, ""},
		{"admin device: unmapped method", &laptop, "POST", "/api/status", 403, ""},
		{"no credentials", nil, "GET", "/api/status", 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.client(t, tt.cert, clientOpt{})
			before := h.up.len()
			r := do(t, c, tt.method, h.url+tt.path, nil, nil)
			if r.status != tt.want {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, r.status, r.body, tt.want)
			}
			ev := h.rec.last()
			if ev.Name != audit.EventAuthzDecision || ev.Resource != tt.path || ev.Meta["method"] != tt.method {
				t.Errorf("audit entry = %+v, want an authz.decision for %s %s", ev, tt.method, tt.path)
			}
			if tt.want == 200 {
				if h.up.len() != before+1 {
					t.Errorf("upstream saw %d requests, want 1", h.up.len()-before)
				}
				if ev.Outcome != audit.OutcomeAllow {
					t.Errorf("audit outcome = %q, want allow", ev.Outcome)
				}
				return
			}
			if h.up.len() != before {
				t.Errorf("upstream saw %d requests for a refused one: %+v", h.up.len()-before, h.up.lastReq())
			}
			if ev.Outcome != audit.OutcomeDeny || ev.Reason == "" {
				t.Errorf("audit entry = %+v, want a deny with a reason", ev)
			}
			var body struct{ Error, Code, Capability string }
			if err := json.Unmarshal([]byte(r.body), &body); err != nil {
				t.Fatalf("body %q is not JSON: %v", r.body, err)
			}
			wantCode := map[int]string{401: "unauthenticated", 403: "forbidden"}[tt.want]
			if body.Code != wantCode || body.Capability != tt.cap || body.Error == "" {
				t.Errorf("body = %+v, want code %q capability %q", body, wantCode, tt.cap)
			}
		})
	}
	if got := h.rec.events[2].Principal; got != "device:kitchen-pi" {
		t.Errorf("audit principal = %q, want device:kitchen-pi", got)
	}
}

func TestDenyReason(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	r := do(t, h.client(t, &pi, clientOpt{}), "POST", h.url+"/api/plugins/x", nil, nil)
	want := "device:kitchen-pi lacks plugins:install (has conversations:read, status)"
	if !strings.Contains(r.body, want) || h.rec.last().Reason != want {
		t.Errorf("body %q / audit reason %q, want %q", r.body, h.rec.last().Reason, want)
	}
}

func TestIdentityHeaders(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	c := h.client(t, &pi, clientOpt{})
	spoof := http.Header{
		"X-Hearth-Principal":    {"user:root"},
		"X-Hearth-Capabilities": {"hearth:admin"},
		"X-Hearth-Zone":         {"lan"},
		"X_hearth_method":       {"local"},
		"X-Forwarded-For":       {"203.0.113.9"},
		"X-Forwarded-Proto":     {"http"},
		"Forwarded":             {"for=203.0.113.9"},
	}
	tests := []struct {
		name string
		conn string
	}{
		{"direct", ""},
		{"via Connection", "X-Hearth-Principal, X-Hearth-Method, X-Hearth-Capabilities, X-Forwarded-For"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := spoof.Clone()
			if tt.conn != "" {
				hdr["Connection"] = []string{tt.conn}
			}
			if r := do(t, c, "GET", h.url+"/api/status", nil, hdr); r.status != 200 {
				t.Fatalf("status = %d %s", r.status, r.body)
			}
			got := h.up.lastReq().Header
			want := map[string]string{
				HeaderPrincipal:     "device:kitchen-pi",
				HeaderMethod:        "device",
				HeaderCapabilities:  "conversations:read,status",
				"X-Forwarded-For":   "127.0.0.1",
				"X-Forwarded-Proto": "https",
			}
			for k, v := range want {
				if vs := got.Values(k); len(vs) != 1 || vs[0] != v {
					t.Errorf("upstream %s = %q, want [%q]", k, vs, v)
				}
			}
			for k := range got {
				if isHearthHeader(k) && want[k] == "" {
					t.Errorf("upstream got client header %s: %q", k, got[k])
				}
			}
			if got.Get("Forwarded") != "" {
				t.Errorf("upstream got Forwarded %q", got.Get("Forwarded"))
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	var h *harness
	alice := &authz.Principal{ID: "user:alice", Kind: authz.KindUser, Method: authz.MethodToken, AuthTime: time.Now()}
	h = newHarness(t, func(o *GatewayOptions) {
		o.Tokens = tokens{"good-token": alice}
		// Loopback is not trusted here, so the test client is "remote".
		o.TrustedNetworks = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	})
	alice.Caps = h.caps(t, "system:admin")
	c := h.client(t, nil, clientOpt{})
	tests := []struct {
		name   string
		auth   string
		method string
		path   string
		want   int
		reason string
	}{
		{"status", "Bearer good-token", "GET", "/api/status", 200, ""},
		{"scheme is case-insensitive", "bearer good-token", "GET", "/api/status", 200, ""},
		{"plugins from remote without mfa", "Bearer good-token", "POST", "/api/plugins/x", 403, "plugins:install requires a device or local session, this is a token from remote"},
		{"bad token", "Bearer nope", "GET", "/api/status", 401, "bearer token is invalid"},
		{"empty token", "Bearer ", "GET", "/api/status", 401, "malformed"},
		{"basic auth is no credential", "Basic YWxpY2U6cHc=", "GET", "/api/status", 401, "no client certificate and no bearer token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, tt.method, h.url+tt.path, nil, http.Header{"Authorization": {tt.auth}})
			if r.status != tt.want || !strings.Contains(r.body, tt.reason) {
				t.Fatalf("status = %d %s, want %d containing %q", r.status, r.body, tt.want, tt.reason)
			}
			if tt.want == 200 {
				up := h.up.lastReq().Header
				if up.Get("Authorization") != "" || up.Get(HeaderPrincipal) != "user:alice" || up.Get(HeaderMethod) != "token" {
					t.Errorf("upstream headers = %v; want no Authorization and user:alice via token", up)
				}
			}
			if tt.want == 401 && r.resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
	if alice.Zone != "" {
		t.Errorf("gateway modified the authenticator's principal: zone %q", alice.Zone)
	}
}

func TestTokenInURLRefused(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	c := h.client(t, &pi, clientOpt{})
	for _, q := range []string{"token=x", "access_token=x", "a=1&ACCESS_TOKEN=y", "acc%65ss_token=z"} {
		before := h.up.len()
		r := do(t, c, "GET", h.url+"/api/status?"+q, nil, nil)
		if r.status != 400 || !strings.Contains(r.body, "token_in_url") || h.up.len() != before {
			t.Errorf("GET ?%s = %d %s, want 400 token_in_url and nothing upstream", q, r.status, r.body)
		}
	}
	if r := do(t, c, "GET", h.url+"/api/status?tokens=1&q=token", nil, nil); r.status != 200 {
		t.Errorf("GET ?tokens=1&q=token = %d, want 200", r.status)
	}
	if got := h.up.lastReq().Query; got != "tokens=1&q=token" {
		t.Errorf("upstream query = %q, want it passed through", got)
	}
}

// rawGet sends a request line byte for byte over mTLS and returns the
// status, so that paths reach the gateway exactly as an attacker writes them.
func (h *harness) rawGet(t *testing.T, cert *tls.Certificate, target string, extra string) int {
	t.Helper()
	cfg := h.tlsConfig(cert, clientOpt{})
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(h.url, "https://"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: hearth\r\n%sConnection: close\r\n\r\n", target, extra)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %q: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestPathAttacks(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi") // system:read: status, conversations
	tests := []struct {
		path     string
		want     int
		upstream string // the path the agent must see when allowed
	}{
		{"/api/status", 200, "/api/status"},
		{"/api/conversations/./1", 200, "/api/conversations/1"},
		{"/api/conversations//1", 200, "/api/conversations/1"},
		{"/api/%63onversations/1", 200, "/api/conversations/1"},
		{"/api/conversations/%7euser", 200, "/api/conversations/~user"},
		{"/api/conversations/a%3bb", 200, "/api/conversations/a%3Bb"},
		{"/api/conversations/../settings/x", 403, ""},
		{"/api/conversations/%2e%2e/settings/x", 403, ""},
		{"/api/conversations/%2E%2E/settings/x", 403, ""},
		{"/api/conversations/.%2e/plugins/x", 403, ""},
		{"/api/conversations/..%2fsettings", 400, ""},
		{"/api/conversations/..%2Fsettings", 400, ""},
		{"/api/conversations%2f..%2fsettings", 400, ""},
		{"/api/conversations/..%5csettings", 400, ""},
		{"/api/conversations/..\\settings", 400, ""},
		{"/api/conversations/..;/settings/x", 400, ""},
		{"/api/status;/../settings/x", 400, ""},
		{"//api//settings//x", 403, ""},
		{"/api/conversations/%00/../../settings", 400, ""},
		{"/api/conversations/%252e%252e/settings", 400, ""},
		{"/api/conversations/%252E%2541", 400, ""},
		{"/api/conversations/%c0%ae%c0%ae/settings", 400, ""},
		{"/api/conversations/%2", 400, ""},
		{"/api/conversations/%zz", 400, ""},
		{"/API/SETTINGS/x", 403, ""},
		{"/api/Settings/", 403, ""},
		{"/api/settings", 403, ""},
		{"/%2e%2e/%2e%2e/api/plugins/x", 403, ""},
		{"/api/status/..", 403, ""},
		{"http://evil/api/status", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			before := h.up.len()
			got := h.rawGet(t, &pi, tt.path, "")
			if got != tt.want {
				t.Fatalf("GET %q = %d, want %d", tt.path, got, tt.want)
			}
			if tt.want != 200 {
				if h.up.len() != before {
					t.Fatalf("upstream saw %+v for a refused path", h.up.lastReq())
				}
				return
			}
			if s := h.up.lastReq(); s.Escaped != tt.upstream {
				t.Errorf("upstream path = %q (decoded %q), want %q", s.Escaped, s.Path, tt.upstream)
			}
		})
	}
	// Whatever was forwarded, nothing under settings or plugins reached
	// the agent for this device.
	for _, s := range h.up.all() {
		p := strings.ToLower(s.Path)
		if strings.Contains(p, "settings") || strings.Contains(p, "plugins") {
			if !strings.Contains(p, "%2") {
				t.Errorf("upstream saw %q", s.Path)
			}
		}
	}
}

func TestHearthPaths(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	c := h.client(t, &pi, clientOpt{})
	anon := h.client(t, nil, clientOpt{})

	if r := do(t, anon, "GET", h.url+"/.hearth/healthz", nil, nil); r.status != 200 || strings.TrimSpace(r.body) != `{"ok":true}` {
		t.Errorf("healthz = %d %q", r.status, r.body)
	}
	if r := do(t, anon, "GET", h.url+"/.hearth/v1/whoami", nil, nil); r.status != 401 {
		t.Errorf("anonymous whoami = %d, want 401", r.status)
	}
	r := do(t, c, "GET", h.url+"/.hearth/v1/whoami", nil, nil)
	var who Whoami
	if err := json.Unmarshal([]byte(r.body), &who); err != nil || r.status != 200 {
		t.Fatalf("whoami = %d %q: %v", r.status, r.body, err)
	}
	if who.Principal != "device:kitchen-pi" || who.Method != "device" || who.Zone != "lan" || len(who.Capabilities) != 2 {
		t.Errorf("whoami = %+v", who)
	}
	tests := []struct {
		cap     string
		allowed bool
		reason  string
	}{
		{"status", true, "device:kitchen-pi has status"},
		{"plugins:install", false, "lacks plugins:install"},
		{"nonsense", false, "not a known capability"},
	}
	for _, tt := range tests {
		r := do(t, c, "POST", h.url+"/.hearth/v1/authz/check", strings.NewReader(`{"capability":"`+tt.cap+`"}`), nil)
		var out CheckResponse
		if err := json.Unmarshal([]byte(r.body), &out); err != nil || r.status != 200 {
			t.Fatalf("check %s = %d %q", tt.cap, r.status, r.body)
		}
		if out.Allowed != tt.allowed || !strings.Contains(out.Reason, tt.reason) {
			t.Errorf("check %s = %+v, want allowed %v reason %q", tt.cap, out, tt.allowed, tt.reason)
		}
		if ev := h.rec.last(); ev.Meta["capability"] != tt.cap || ev.Meta["source"] != "authz/check" {
			t.Errorf("check %s audit = %+v", tt.cap, ev)
		}
	}
	if r := do(t, anon, "POST", h.url+"/.hearth/v1/authz/check", strings.NewReader(`{"capability":"status"}`), nil); r.status != 401 {
		t.Errorf("anonymous check = %d, want 401", r.status)
	}
	// Other /.hearth/ paths go to the hearth mux with the principal, even
	// when reached through dot segments; the agent never sees them.
	before := h.up.len()
	if r := do(t, c, "GET", h.url+"/.hearth/v1/roots.pem", nil, nil); r.body != "hearth mux: /.hearth/v1/roots.pem" {
		t.Errorf("hearth mux answer = %q", r.body)
	}
	if got := h.rawGet(t, &pi, "/api/%2e%2e/.hearth/v1/enroll", "X-Hearth-Principal: user:root\r\n"); got != 200 {
		t.Errorf("dot-segment hearth path = %d", got)
	}
	if r := do(t, anon, "GET", h.url+"/.hearth/v1/auth/login", nil, nil); r.status != 200 {
		t.Errorf("anonymous hearth path = %d", r.status)
	}
	h.mu.Lock()
	seen := h.hearthSeen
	h.mu.Unlock()
	if len(seen) != 3 || seen[0] == nil || seen[0].ID != "device:kitchen-pi" || seen[1] == nil || seen[2] != nil {
		t.Errorf("hearth mux principals = %v, want kitchen-pi, kitchen-pi, nil", seen)
	}
	if h.up.len() != before {
		t.Errorf("upstream saw a /.hearth/ request")
	}
}

func TestRevocationOnKeptAliveConnection(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	c := h.client(t, &pi, clientOpt{})
	var reused []bool
	get := func() int {
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", h.url+"/api/status", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(); got != 200 {
		t.Fatalf("before revocation = %d", got)
	}
	h.dev.revoke("kitchen-pi")
	if got := get(); got != 401 {
		t.Errorf("after revocation = %d, want 401", got)
	}
	if len(reused) != 2 || !reused[1] {
		t.Errorf("connection reuse = %v, want the second request on the same connection", reused)
	}
	if want := "not authenticated: the client certificate's device is unknown, revoked or expired"; h.rec.last().Reason != want {
		t.Errorf("audit reason = %q, want %q", h.rec.last().Reason, want)
	}
}

func TestResumedSessionIsChecked(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	cache := tls.NewLRUClientSessionCache(4)
	get := func() (int, bool) {
		// A fresh transport each time: a new TLS connection that can
		// resume from the shared session cache.
		c := h.client(t, &pi, clientOpt{cache: cache})
		r := do(t, c, "GET", h.url+"/api/status", nil, nil)
		c.Transport.(*http.Transport).CloseIdleConnections()
		return r.status, r.resp.TLS.DidResume
	}
	if st, resumed := get(); st != 200 || resumed {
		t.Fatalf("first = %d resumed %v, want 200 on a full handshake", st, resumed)
	}
	lookups := h.dev.count()
	if st, resumed := get(); st != 200 || !resumed {
		t.Fatalf("second = %d resumed %v, want 200 on a resumed session", st, resumed)
	}
	if h.dev.count() != lookups+1 {
		t.Errorf("resumed request did not look the device up")
	}
	h.dev.revoke("kitchen-pi")
	if st, resumed := get(); st != 401 || !resumed {
		t.Errorf("after revocation = %d resumed %v, want 401 on a resumed session", st, resumed)
	}
}

func TestClientCertificates(t *testing.T) {
	h := newHarness(t)
	foreign := newTestCA(t, "someone else's CA").device(t, "kitchen-pi")
	serverEKU := h.ca.issue(t, "kitchen-pi", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil, h.ca.device(t, "kitchen-pi").Leaf.URIs)
	noEKU := h.ca.issue(t, "kitchen-pi", nil, nil, h.ca.device(t, "kitchen-pi").Leaf.URIs)
	unknown := h.ca.device(t, "stranger")
	for _, tt := range []struct {
		name string
		cert tls.Certificate
	}{{"foreign CA", foreign}, {"serverAuth only", serverEKU}, {"no EKU", noEKU}} {
		t.Run(tt.name, func(t *testing.T) {
			before := h.up.len()
			req, _ := http.NewRequest("GET", h.url+"/api/status", nil)
			resp, err := h.client(t, &tt.cert, clientOpt{}).Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("request with a %s certificate = %d, want a TLS failure", tt.name, resp.StatusCode)
			}
			if h.up.len() != before {
				t.Errorf("upstream saw a request")
			}
		})
	}
	if r := do(t, h.client(t, &unknown, clientOpt{}), "GET", h.url+"/api/status", nil, nil); r.status != 401 {
		t.Errorf("unknown device = %d, want 401", r.status)
	}
	h.dev.fail = errors.New("store: disk on fire")
	pi := h.ca.device(t, "kitchen-pi")
	if r := do(t, h.client(t, &pi, clientOpt{}), "GET", h.url+"/api/status", nil, nil); r.status != 503 {
		t.Errorf("directory failure = %d, want 503", r.status)
	}
}

func TestAuditFailureFailsClosed(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	c := h.client(t, &pi, clientOpt{})
	h.rec.setFail(true)
	before := h.up.len()
	r := do(t, c, "GET", h.url+"/api/status", nil, nil)
	if r.status != 503 || !strings.Contains(r.body, `"code":"unavailable"`) {
		t.Errorf("status = %d %s, want 503 unavailable", r.status, r.body)
	}
	if h.up.len() != before {
		t.Errorf("upstream saw a request whose decision was not recorded")
	}
	r = do(t, c, "POST", h.url+"/.hearth/v1/authz/check", strings.NewReader(`{"capability":"status"}`), nil)
	if r.status != 503 {
		t.Errorf("authz/check with a failing log = %d, want 503", r.status)
	}
}

func TestLimits(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	c := h.client(t, &pi, clientOpt{})
	big := strings.Repeat("a", 200<<10)
	before := h.up.len()
	if r := do(t, c, "GET", h.url+"/api/status", nil, http.Header{"X-Big": {big}}); r.status != 431 {
		t.Errorf("200 KiB header = %d, want 431", r.status)
	}
	body := bytes.Repeat([]byte("b"), 2<<20)
	if r := do(t, c, "POST", h.url+"/api/upload", bytes.NewReader(body), nil); r.status != 413 {
		t.Errorf("2 MiB body = %d %s, want 413", r.status, r.body)
	}
	if h.up.len() != before {
		t.Errorf("upstream saw an oversized request")
	}
	// A chunked body (no Content-Length) is cut off at the limit too.
	if r := do(t, c, "POST", h.url+"/api/upload", io.MultiReader(bytes.NewReader(body)), nil); r.status != 413 {
		t.Errorf("2 MiB chunked body = %d %s, want 413", r.status, r.body)
	}
	if r := do(t, c, "POST", h.url+"/api/upload", bytes.NewReader(body[:1000]), nil); r.status != 200 || !strings.Contains(r.body, "1000 bytes") {
		t.Errorf("small body = %d %s", r.status, r.body)
	}
}

func TestHTTP2(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	c := h.client(t, &pi, clientOpt{h2: true})
	r := do(t, c, "GET", h.url+"/api/status", nil, nil)
	if r.status != 200 || r.resp.ProtoMajor != 2 {
		t.Fatalf("h2 GET = %d over %s", r.status, r.resp.Proto)
	}
	if r := do(t, c, "GET", h.url+"/api/settings/x", nil, nil); r.status != 403 {
		t.Errorf("h2 settings = %d, want 403", r.status)
	}
	if got := h.up.lastReq().Header.Get(HeaderPrincipal); got != "device:kitchen-pi" {
		t.Errorf("upstream principal over h2 = %q", got)
	}
}

func TestServerSentEvents(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	c := h.client(t, &pi, clientOpt{})
	resp, err := c.Get(h.url + "/api/events/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first event = %q, %v (must arrive while the agent is still streaming)", line, err)
	}
	close(h.release)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "data: second") {
		t.Errorf("rest = %q", rest)
	}
}

func TestWebsocketAndRevocation(t *testing.T) {
	h := newHarness(t, func(o *GatewayOptions) { o.RecheckInterval = 200 * time.Millisecond })
	pi := h.ca.device(t, "kitchen-pi")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(h.url, "https", "wss", 1)+"/ws", &websocket.DialOptions{HTTPClient: h.client(t, &pi, clientOpt{})})
	if err != nil {
		t.Fatalf("websocket dial: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := ws.Read(ctx); err != nil || string(b) != "hello" {
		t.Fatalf("echo = %q, %v", b, err)
	}
	if got := h.up.lastReq().Header.Get(HeaderPrincipal); got != "device:kitchen-pi" {
		t.Errorf("upstream principal = %q", got)
	}
	h.dev.revoke("kitchen-pi")
	start := time.Now()
	_, _, err = ws.Read(ctx)
	if err == nil {
		t.Fatal("read succeeded after revocation")
	}
	// hearth's close frame, not an abnormal closure (1006).
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.HasPrefix(ce.Reason, "hearth: ") {
		t.Errorf("read after revocation: %v, want close 1008 with hearth's reason", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("websocket closed %v after revocation, want within a few seconds", d)
	}
	if ev := h.rec.last(); ev.Outcome != audit.OutcomeDeny || ev.Meta["upgrade"] != "closed" {
		t.Errorf("audit = %+v, want the closing recorded", ev)
	}

	// A device without the route's capability cannot upgrade at all.
	h.dev.set("kitchen-pi", nil)
	_, resp, err := websocket.Dial(ctx, strings.Replace(h.url, "https", "wss", 1)+"/ws", &websocket.DialOptions{HTTPClient: h.client(t, &pi, clientOpt{})})
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Errorf("upgrade without capability: %v, %v", resp, err)
	}
}

func TestUpstreamErrors(t *testing.T) {
	h := newHarness(t, func(o *GatewayOptions) { o.UpstreamTimeout = 300 * time.Millisecond })
	pi := h.ca.device(t, "kitchen-pi")
	c := h.client(t, &pi, clientOpt{})
	if r := do(t, c, "GET", h.url+"/api/slow", nil, nil); r.status != 504 || !strings.Contains(r.body, "upstream_timeout") {
		t.Errorf("slow upstream = %d %s, want 504 JSON", r.status, r.body)
	}
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL, _ := url.Parse("http://" + dead.Addr().String())
	dead.Close()
	h2 := newHarness(t, func(o *GatewayOptions) { o.Upstream = deadURL })
	pi2 := h2.ca.device(t, "kitchen-pi")
	if r := do(t, h2.client(t, &pi2, clientOpt{}), "GET", h2.url+"/api/status", nil, nil); r.status != 502 || !strings.Contains(r.body, "upstream_unavailable") {
		t.Errorf("dead upstream = %d %s, want 502 JSON", r.status, r.body)
	}
}

func TestSlowBody(t *testing.T) {
	h := newHarness(t, func(o *GatewayOptions) { o.BodyReadTimeout = 300 * time.Millisecond })
	pi := h.ca.device(t, "kitchen-pi")
	cfg := h.tlsConfig(&pi, clientOpt{})
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(h.url, "https://"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Promise 100 bytes, send 3, then stall.
	fmt.Fprint(conn, "POST /api/upload HTTP/1.1\r\nHost: hearth\r\nContent-Length: 100\r\n\r\nabc")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("stalled body = %d, want 408", resp.StatusCode)
	}
}

func TestHealthzDespiteStoreFailure(t *testing.T) {
	h := newHarness(t)
	pi := h.ca.device(t, "kitchen-pi")
	h.dev.fail = errors.New("store: down")
	if r := do(t, h.client(t, &pi, clientOpt{}), "GET", h.url+"/.hearth/healthz", nil, nil); r.status != 200 {
		t.Errorf("healthz with a certificate while the store is down = %d, want 200", r.status)
	}
	if r := do(t, h.client(t, &pi, clientOpt{}), "GET", h.url+"/.hearth/v1/whoami", nil, nil); r.status != 503 {
		t.Errorf("whoami while the store is down = %d, want 503", r.status)
	}
	// hearth's own endpoints decide about their query themselves.
	if r := do(t, h.client(t, nil, clientOpt{}), "GET", h.url+"/.hearth/v1/enroll?token=one-time", nil, nil); r.status != 200 {
		t.Errorf("hearth path with a token query = %d, want it passed to the hearth mux", r.status)
	}
}

// A certificate that expires while its connection is kept alive is refused
// on the next request: validity is checked per request with the gateway's
// clock, not only in the handshake.
func TestCertificateExpiresOnOpenConnection(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	h := newHarness(t, func(o *GatewayOptions) {
		o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	pi := h.ca.device(t, "kitchen-pi") // valid for one hour
	c := h.client(t, &pi, clientOpt{})
	if r := do(t, c, "GET", h.url+"/api/status", nil, nil); r.status != 200 {
		t.Fatalf("before expiry = %d", r.status)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	if r := do(t, c, "GET", h.url+"/api/status", nil, nil); r.status != 401 {
		t.Errorf("after expiry = %d, want 401", r.status)
	}
}

func TestEventStreamClosedOnRevocation(t *testing.T) {
	h := newHarness(t, func(o *GatewayOptions) { o.RecheckInterval = 200 * time.Millisecond })
	pi := h.ca.device(t, "kitchen-pi")
	for _, proto := range []struct {
		name string
		h2   bool
	}{{"HTTP/1.1", false}, {"HTTP/2", true}} {
		t.Run(proto.name, func(t *testing.T) {
			h.dev.set("kitchen-pi", h.caps(t, "system:read"))
			c := h.client(t, &pi, clientOpt{h2: proto.h2})
			req, _ := http.NewRequest("GET", h.url+"/api/events/stream", nil)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			if line, err := br.ReadString('\n'); err != nil || line != "data: first\n" {
				t.Fatalf("first event = %q, %v", line, err)
			}
			h.dev.revoke("kitchen-pi")
			start := time.Now()
			rest, err := io.ReadAll(br)
			if strings.Contains(string(rest), "second") {
				t.Fatalf("stream went on after revocation: %q", rest)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("stream ended %v after revocation (%v), want within a few seconds", d, err)
			}
		})
	}
}
