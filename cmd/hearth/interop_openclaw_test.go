package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hearth-home/hearth/internal/testbrowser"
)

// TestOpenClawInterop runs the real OpenClaw (2026.9.6, Node 24) behind the
// real hearth, configured by what `hearth init --agent openclaw` produced
// (hearth.yaml and openclaw.patch.json, applied with `openclaw config
// patch`), with a stub model and clients in a network namespace of the
// test's own: a lan address (10.209.N.2) and a remote one (198.18.N.2).
// OpenClaw starts once (≈15 s, ≈760 MB); the subtests share it.
func TestOpenClawInterop(t *testing.T) {
	openClawInstall(t) // fails under CI, skips elsewhere, when missing
	testbrowser.Path(t)
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
	// The gateway listens on every address of the host for this test's
	// minute: the namespace's clients reach it at lan.HostIP, the on-host
	// client at 127.0.0.1.
	srv := startServeOn(t, dir, fmt.Sprintf(":%d", gwPort), upstream)
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
		if _, err := conn.call(ctx, "sessions.list", map[string]any{}); err != nil {
			t.Errorf("a read method (sessions.list) failed: %v", err)
		}
		calls := model.calls.Load()
		_, err = conn.call(ctx, "chat.send", chatParams("may I write?"))
		if err == nil || !strings.Contains(err.Error(), "operator.write") {
			t.Errorf("chat.send with operator.read: %v, want refused for missing operator.write", err)
		}
		if model.calls.Load() != calls {
			t.Error("the refused chat.send reached the model")
		}
	})

	writer := h.enroll(t, "writer", "system:write")
	t.Run("write device chats, without operator.admin", func(t *testing.T) {
		c := h.httpClient(t, writer, lan.LANClient)
		// An agent turn on a busy 2-core CI machine can take a minute.
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		conn, err := newOperatorClient(t).connect(ctx, h.wsURL(), c, h.originHeader())
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.ws.CloseNow()
		want := "[operator.approvals operator.questions operator.read operator.write]"
		if got := fmt.Sprint(sorted(conn.Scopes)); got != want {
			t.Errorf("hello-ok scopes = %v, want %s", got, want)
		}
		h.chat(t, ctx, conn)
		if _, err := conn.call(ctx, "config.set", map[string]any{}); err == nil || !strings.Contains(err.Error(), "operator.admin") {
			t.Errorf("config.set (operator.admin) for a system:write device: %v, want refused for missing operator.admin", err)
		}
		// The OpenAI-compatible API, with a body over the gateway's
		// default 1 MiB (the profile allows 32 MiB).
		big := strings.Repeat("x", 1<<20+100<<10)
		res := h.do(t, c, "POST", "/v1/chat/completions", http.Header{"Content-Type": {"application/json"}},
			`{"model":"openclaw","messages":[{"role":"user","content":"hello `+big+`"}]}`)
		if res.status != 200 || !strings.Contains(res.body, stubReply) {
			t.Errorf("POST /v1/chat/completions (1.1 MiB) = %d %.300s, want the stub's answer", res.status, res.body)
		}
	})

	t.Run("an on-host client is served as 192.0.0.8", func(t *testing.T) {
		cfg := deviceTLS(t, reader)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: time.Minute}
		base := fmt.Sprintf("https://127.0.0.1:%d", gwPort)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := newOperatorClient(t).connect(ctx, "wss://127.0.0.1:"+fmt.Sprint(gwPort)+"/", c, h.originHeader())
		if err != nil {
			t.Fatalf("handshake from loopback: %v (OpenClaw refuses a forwarded loopback address)", err)
		}
		conn.ws.CloseNow()
		req, _ := http.NewRequest("GET", base+"/", nil)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("GET / from loopback = %d", res.StatusCode)
		}
	})

	t.Run("client-sent x-openclaw-scopes and X-Real-IP change nothing", func(t *testing.T) {
		c := h.httpClient(t, reader, lan.LANClient)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		hdr := h.originHeader()
		hdr.Set("X-Openclaw-Scopes", "operator.admin,operator.write")
		hdr.Set("X-Real-IP", "127.0.0.1")
		hdr.Set("X-Forwarded-For", "127.0.0.1")
		hdr.Set("X-Hearth-Principal", "user:alice")
		conn, err := newOperatorClient(t).connect(ctx, h.wsURL(), c, hdr)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.ws.CloseNow()
		if fmt.Sprint(conn.Scopes) != "[operator.read]" {
			t.Errorf("with spoofed headers hello-ok scopes = %v, want [operator.read]", conn.Scopes)
		}
		if _, err := conn.call(ctx, "chat.send", chatParams("sneaky")); err == nil {
			t.Error("chat.send succeeded with a client-sent x-openclaw-scopes")
		}
		res := h.do(t, c, "POST", "/v1/chat/completions", http.Header{"X-Openclaw-Scopes": {"operator.admin"}, "Content-Type": {"application/json"}}, `{"model":"openclaw","messages":[{"role":"user","content":"hi"}]}`)
		if res.status != 403 || !strings.Contains(res.body, "agent:write") {
			t.Errorf("read device POST /v1/chat/completions with x-openclaw-scopes = %d %s, want 403 (agent:write)", res.status, res.body)
		}
	})

	// bob has system:write and a password. From the lan his token may act;
	// from remote, password-only, it may only read (agent:write needs a
	// second factor there, NIST SP 800-63B AAL2).
	mustHearthIn(t, h.dir, "correct horse battery staple 42\n", "user", "add", "bob", "--caps", "system:write")
	t.Run("password user from remote gets what a remote token gets", func(t *testing.T) {
		for _, tc := range []struct {
			src, want string
			chat      int
		}{
			{lan.RemoteClient, "[operator.read]", 403},
			{lan.LANClient, "[operator.approvals operator.questions operator.read operator.write]", 200},
		} {
			c := h.httpClient(t, "", tc.src)
			tok := h.login(t, c, "bob", "correct horse battery staple 42")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			hdr := h.originHeader()
			hdr.Set("Authorization", "Bearer "+tok)
			conn, err := newOperatorClient(t).connect(ctx, h.wsURL(), c, hdr)
			if err != nil {
				cancel()
				t.Fatalf("from %s: handshake: %v", tc.src, err)
			}
			if got := fmt.Sprint(sorted(conn.Scopes)); got != tc.want {
				t.Errorf("bob from %s: hello-ok scopes = %v, want %s", tc.src, got, tc.want)
			}
			conn.ws.CloseNow()
			cancel()
			res := h.do(t, c, "POST", "/v1/chat/completions", http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}}, `{"model":"openclaw","messages":[{"role":"user","content":"hi"}]}`)
			if res.status != tc.chat {
				t.Errorf("bob from %s: POST /v1/chat/completions = %d %.200s, want %d", tc.src, res.status, res.body, tc.chat)
			}
		}
	})

	mustHearthIn(t, h.dir, "another long passphrase for carol 7\n", "user", "add", "carol", "--caps", "system:write")
	t.Run("Chromium with a session cookie loads the Control UI and chats without pairing", func(t *testing.T) {
		tok := h.login(t, h.httpClient(t, "", lan.LANClient), "carol", "another long passphrase for carol 7")
		h.browserChat(t, tok)
	})

	t.Run("revoking a device closes its websocket with 1008", func(t *testing.T) {
		doomed := h.enroll(t, "doomed", "system:read")
		c := h.httpClient(t, doomed, lan.LANClient)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := newOperatorClient(t).connect(ctx, h.wsURL(), c, h.originHeader())
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.ws.CloseNow()
		mustHearth(t, h.dir, "device", "revoke", "doomed")
		err = conn.waitEvent(ctx, func(frame) bool { return false })
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.HasPrefix(ce.Reason, "hearth: ") {
			t.Errorf("after revocation the websocket ended with %v, want close 1008 with hearth's reason", err)
		}
		if res := h.get(t, h.httpClient(t, doomed, lan.LANClient), "/", nil); res.status != 401 {
			t.Errorf("revoked device's next request = %d, want 401", res.status)
		}
	})

	t.Run("a changed principal reaches OpenClaw without a restart", func(t *testing.T) {
		op := newOperatorClient(t) // the same device identity throughout
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		scopesOf := func(devDir string) string {
			t.Helper()
			conn, err := op.connect(ctx, h.wsURL(), h.httpClient(t, devDir, lan.LANClient), h.originHeader())
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer conn.ws.CloseNow()
			return fmt.Sprint(sorted(conn.Scopes))
		}
		d1 := h.enroll(t, "changer", "system:read")
		if got := scopesOf(d1); got != "[operator.read]" {
			t.Errorf("as system:read: %s", got)
		}
		mustHearth(t, h.dir, "device", "revoke", "changer")
		d2 := h.enroll(t, "changer", "system:write")
		if got := scopesOf(d2); got != "[operator.approvals operator.questions operator.read operator.write]" {
			t.Errorf("after the owner gave changer system:write: %s", got)
		}
		mustHearth(t, h.dir, "device", "revoke", "changer")
		d3 := h.enroll(t, "changer", "system:read")
		if got := scopesOf(d3); got != "[operator.read]" {
			t.Errorf("after the owner took system:write away again: %s (the device grant OpenClaw keeps is capped on every upgrade)", got)
		}
	})
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func chatParams(msg string) map[string]any {
	var b [8]byte
	rand.Read(b[:])
	return map[string]any{"sessionKey": "main", "message": msg, "idempotencyKey": hex.EncodeToString(b[:])}
}

// chat sends a chat message and waits for the stub model's words in the
// events that follow.
func (h *ocHarness) chat(t *testing.T, ctx context.Context, conn *opConn) {
	t.Helper()
	calls := h.model.calls.Load()
	seen := false
	watch := func(f frame) {
		if strings.Contains(string(f.Payload), stubReply) {
			seen = true
		}
	}
	if _, err := conn.call(ctx, "chat.send", chatParams("hello from hearth"), watch); err != nil {
		t.Fatalf("chat.send: %v", err)
	}
	if !seen {
		if err := conn.waitEvent(ctx, func(f frame) bool { return strings.Contains(string(f.Payload), stubReply) }); err != nil {
			t.Fatalf("waiting for the model's answer: %v (model called %d times)", err, h.model.calls.Load()-calls)
		}
	}
}

// login signs in through hearth's login API and returns the token.
func (h *ocHarness) login(t *testing.T, c *http.Client, user, password string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"username": user, "password": password})
	res := h.do(t, c, "POST", "/.hearth/v1/auth/login", http.Header{"Content-Type": {"application/json"}}, string(b))
	var out struct{ Token string }
	if res.status != 200 || json.Unmarshal([]byte(res.body), &out) != nil || out.Token == "" {
		t.Fatalf("login %s = %d %s", user, res.status, res.body)
	}
	return out.Token
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
	return &http.Client{Transport: tr, Timeout: 4 * time.Minute}
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

// mustHearthIn runs hearth with stdin and fails the test on an error.
func mustHearthIn(t *testing.T, dir, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := hearthCmd(t, dir, stdin, args...)
	if err != nil {
		t.Fatalf("hearth %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
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
