package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOpenClawInterop runs the real OpenClaw (2026.9.6, Node 24) behind the
// real hearth, configured by what `hearth init --agent openclaw` produced
// (hearth.yaml and openclaw.patch.json, applied with `openclaw config
// patch`), with a stub model and clients in a network namespace of the
// test's own: a lan address (10.209.N.2) and a remote one (198.18.N.2).
// OpenClaw starts once (≈15 s, ≈760 MB); the subtests share it.
func TestOpenClawInterop(t *testing.T) {
	lan := newTestLAN(t)
	model := startStubModel(t)
	ocPort := freePort(t, "127.0.0.1")
	gwPort := freePort(t, lan.HostIP)
	gwAddr := net.JoinHostPort(lan.HostIP, fmt.Sprint(gwPort))
	publicURL := "https://" + gwAddr
	upstream := fmt.Sprintf("http://127.0.0.1:%d", ocPort)

	dir := filepath.Join(t.TempDir(), "data")
	var in struct {
		initOut
		Agent         string `json:"agent"`
		OpenClawPatch string `json:"openclaw_patch"`
	}
	out := mustHearth(t, dir, "init", "--owner", "alice", "--agent", "openclaw", "--hosts", lan.HostIP,
		"--public-url", publicURL, "--upstream", upstream, "--trusted-networks", "127.0.0.0/8,::1/128,"+lan.LANNet, "--json")
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		t.Fatal(err)
	}
	if in.Agent != "openclaw" || in.OpenClawPatch != filepath.Join(dir, "openclaw.patch.json") {
		t.Fatalf("init printed agent %q, patch %q", in.Agent, in.OpenClawPatch)
	}

	oc := newOpenClaw(t, ocPort, model)
	oc.run(t, "config", "patch", "--file", in.OpenClawPatch)
	cfg, _ := os.ReadFile(oc.cfgPath)
	if strings.Contains(string(cfg), "a-shared-admin-token") {
		t.Fatalf("after the patch OpenClaw still has its shared token:\n%s", cfg)
	}
	oc.start(t)
	srv := startServeOn(t, dir, gwAddr, upstream)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("openclaw output (tail):\n%s", tailLines(oc.out.String(), 40))
			t.Logf("hearth stderr (tail):\n%s", tailLines(srv.stderr.String(), 20))
		}
	})

	h := &ocHarness{t: t, lan: lan, dir: dir, base: publicURL, fingerprint: in.Fingerprint, srv: srv, model: model}
	reader := h.enroll(t, "reader", "system:read")

	t.Run("read device: Control UI and operator.read websocket", func(t *testing.T) {
		c := h.httpClient(t, reader, lan.LANClient)
		res := h.get(t, c, "/", nil)
		if res.status != 200 || !strings.Contains(strings.ToLower(res.body), "<html") {
			t.Fatalf("GET / = %d %.200s, want the Control UI", res.status, res.body)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		op := newOperatorClient(t)
		conn, err := op.connect(ctx, h.wsURL(), c, h.originHeader())
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.ws.CloseNow()
		if fmt.Sprint(conn.Scopes) != "[operator.read]" {
			t.Errorf("hello-ok scopes = %v, want [operator.read]", conn.Scopes)
		}
	})
}

// ocHarness holds what the OpenClaw subtests share.
type ocHarness struct {
	t           *testing.T
	lan         *testLAN
	dir, base   string
	fingerprint string
	srv         *served
	model       *stubModel
}

// enroll adds a device with caps and enrolls it with `hearth enroll`
// through the gateway; it returns the device's directory.
func (h *ocHarness) enroll(t *testing.T, name, caps string) string {
	t.Helper()
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(mustHearth(t, h.dir, "device", "add", name, "--caps", caps, "--json")), &tok); err != nil {
		t.Fatal(err)
	}
	devDir := filepath.Join(t.TempDir(), name)
	mustHearth(t, h.dir, "enroll", "--ca-url", h.base, "--fingerprint", h.fingerprint, "--token", tok.Token, "--out", devDir)
	return devDir
}

// httpClient is an HTTP client in the namespace (source src) with the
// device's certificate (devDir) or none (""), trusting hearth's root.
func (h *ocHarness) httpClient(t *testing.T, devDir, src string) *http.Client {
	t.Helper()
	var cfg *tls.Config
	if devDir != "" {
		cfg = deviceTLS(t, devDir)
	} else {
		cfg = rootTLS(t, filepath.Join(h.dir, "ca", "root_ca.crt"))
	}
	tr := &http.Transport{TLSClientConfig: cfg, DialContext: h.lan.Dialer(src), ForceAttemptHTTP2: false}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

func (h *ocHarness) wsURL() string { return "wss" + strings.TrimPrefix(h.base, "https") + "/" }

func (h *ocHarness) originHeader() http.Header { return http.Header{"Origin": {h.base}} }

type ocResult struct {
	status int
	header http.Header
	body   string
}

func (h *ocHarness) do(t *testing.T, c *http.Client, method, path string, header http.Header, body string) ocResult {
	t.Helper()
	req, err := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	return ocResult{res.StatusCode, res.Header, string(b)}
}

func (h *ocHarness) get(t *testing.T, c *http.Client, path string, header http.Header) ocResult {
	t.Helper()
	return h.do(t, c, http.MethodGet, path, header, "")
}

// rootTLS trusts only the root certificate in file, with no client
// certificate.
func rootTLS(t *testing.T, file string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", file)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
}
