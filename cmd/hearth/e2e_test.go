package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/sampleagent"
)

// hearthBin is the hearth binary the end-to-end tests run, built once.
var hearthBin string

func TestMain(m *testing.M) {
	tmp, err := os.MkdirTemp("", "hearth-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	hearthBin = filepath.Join(tmp, "hearth")
	args := []string{"build", "-o", hearthBin, "."}
	if raceEnabled {
		args = append(args[:1], append([]string{"-race"}, args[1:]...)...)
	}
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building hearth: %v\n%s", err, out)
		os.Exit(2)
	}
	if raceEnabled && os.Getenv("GORACE") == "" {
		// A -race binary sleeps atexit_sleep_ms (default 1000) before
		// every exit: a second per CLI command. Reports are printed when
		// a race is found, not at exit, so none is lost.
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	code := pgtest.Run(m) // m.Run, then stops the PostgreSQL cluster if a test started one
	os.RemoveAll(tmp)
	os.Exit(code)
}

// hearthCmd runs the binary to completion and returns stdout; it fails the
// test on a non-zero exit unless wantErr.
func hearthCmd(t testing.TB, dir string, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, hearthBin, append(args, "--dir", dir)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func mustHearth(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, errOut, err := hearthCmd(t, dir, "", args...)
	if err != nil {
		t.Fatalf("hearth %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// served is a running `hearth serve` process.
type served struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has exited and been waited for
	gateway string
	ca      string
	stderr  *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var servingRE = regexp.MustCompile(`serving gateway on (\S+), CA on (\S+),`)

// startServe runs `hearth serve` on loopback ports chosen by the kernel and
// waits for it to print where it listens.
func startServe(t *testing.T, dir, upstream string, extra ...string) *served {
	t.Helper()
	return startServeIn(t, nil, dir, "127.0.0.1:0", upstream, extra...)
}

// startServeOn is startServe with the gateway on listen.
func startServeOn(t *testing.T, dir, listen, upstream string, extra ...string) *served {
	t.Helper()
	return startServeIn(t, nil, dir, listen, upstream, extra...)
}

// startServeWith is startServe with the command run under wrapper (e.g.
// ip netns exec NAME).
func startServeWith(t *testing.T, wrapper []string, dir, upstream string) *served {
	t.Helper()
	return startServeIn(t, wrapper, dir, "127.0.0.1:0", upstream)
}

// startServeIn runs `hearth serve` under wrapper (none if nil) with the
// gateway on listen and extra flags.
func startServeIn(t *testing.T, wrapper []string, dir, listen, upstream string, extra ...string) *served {
	t.Helper()
	args := append(append([]string(nil), wrapper...), hearthBin, "serve", "--dir", dir, "--listen", listen, "--ca-listen", "127.0.0.1:0", "--upstream", upstream)
	args = append(args, extra...)
	cmd := exec.Command(args[0], args[1:]...)
	pr, pw := io.Pipe()
	buf := &lockedBuffer{}
	cmd.Stderr = io.MultiWriter(pw, buf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &served{cmd: cmd, stderr: buf, exited: make(chan struct{})}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.exited
	})
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
			}
		}
	}()
	select {
	case m := <-found:
		s.gateway, s.ca = m[1], m[2]
	case <-time.After(60 * time.Second):
		t.Fatalf("hearth serve did not start; stderr:\n%s", buf.String())
	}
	go func() { // keep draining
		cmd.Wait()
		pw.Close()
		close(s.exited)
	}()
	return s
}

func startAgent(t testing.TB) (*sampleagent.Agent, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &sampleagent.Agent{}
	srv := &http.Server{Handler: a.Handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a, "http://" + ln.Addr().String()
}

type initOut struct {
	Fingerprint   string   `json:"fingerprint"`
	Owner         string   `json:"owner"`
	Password      string   `json:"password"`
	RecoveryCodes []string `json:"recovery_codes"`
	RootCert      string   `json:"root_cert"`
}

// TestEndToEnd walks the README: init → serve → device add → enroll →
// request over mTLS → revoke → refused on the same connection.
func TestEndToEnd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var in initOut
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "init", "--owner", "alice", "--agent", "sample", "--json")), &in); err != nil {
		t.Fatal(err)
	}
	if len(in.Fingerprint) != 64 || in.Owner != "alice" || len(in.Password) < 15 || len(in.RecoveryCodes) != 10 {
		t.Fatalf("init --json = %+v", in)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	// Every key at rest is 0600.
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && (strings.HasSuffix(p, ".key") || strings.Contains(filepath.Base(p), "key")) && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", p, fi.Mode().Perm())
		}
		return nil
	})
	// A second init refuses and changes nothing.
	before := treeDigest(t, dir)
	if _, _, err := hearthCmd(t, dir, "", "init"); err == nil {
		t.Error("second init succeeded, want refusal")
	}
	if after := treeDigest(t, dir); after != before {
		t.Error("second init changed the data dir")
	}
	// An admin command without a server says so in one line.
	if _, errOut, err := hearthCmd(t, dir, "", "device", "list"); err == nil || !strings.Contains(errOut, "not running") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("device list without server: err=%v stderr=%q, want one line saying hearth is not running", err, errOut)
	}

	agent, upstream := startAgent(t)
	srv := startServe(t, dir, upstream)

	var tok struct {
		Token     string `json:"token"`
		URL       string `json:"url"`
		ExpiresAt string `json:"expires_at"`
	}
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "device", "add", "kitchen-pi", "--caps", "system:read", "--json")), &tok); err != nil {
		t.Fatal(err)
	}
	if tok.Token == "" || tok.URL == "" || tok.ExpiresAt == "" {
		t.Fatalf("device add --json = %+v", tok)
	}
	devDir := filepath.Join(t.TempDir(), "device")
	mustHearth(t, dir, "enroll", "--ca-url", "https://"+srv.gateway, "--fingerprint", in.Fingerprint, "--token", tok.Token, "--out", devDir)
	if fi, err := os.Stat(filepath.Join(devDir, "device.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("device.key: %v %v, want mode 0600", fi, err)
	}
	// The token is single-use.
	if _, _, err := hearthCmd(t, dir, "", "enroll", "--ca-url", "https://"+srv.gateway, "--fingerprint", in.Fingerprint, "--token", tok.Token, "--out", filepath.Join(t.TempDir(), "again")); err == nil {
		t.Error("second enrollment with the same token succeeded")
	}

	client, conns := deviceClient(t, devDir)
	get := func(path string) int {
		t.Helper()
		resp, err := client.Get("https://" + srv.gateway + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("/api/status"); got != http.StatusOK {
		t.Fatalf("GET /api/status = %d, want 200; serve stderr:\n%s", got, srv.stderr.String())
	}
	if got := get("/api/settings"); got != http.StatusForbidden {
		t.Errorf("GET /api/settings as system:read = %d, want 403", got)
	}
	seen := agent.Seen()
	if len(seen) != 1 || seen[0].Path != "/api/status" || seen[0].Principal != "device:kitchen-pi" || seen[0].AuthMethod != "device" {
		t.Errorf("agent saw %+v, want one /api/status from device:kitchen-pi", seen)
	}

	mustHearth(t, dir, "device", "revoke", "kitchen-pi")
	if got := get("/api/status"); got != http.StatusUnauthorized && got != http.StatusForbidden {
		t.Errorf("GET after revoke = %d, want 401 or 403", got)
	}
	if n := conns.count(); n != 1 {
		t.Errorf("requests used %d TLS connections, want 1 (refusal on the same kept-alive connection)", n)
	}
	if len(agent.Seen()) != 1 {
		t.Errorf("the agent saw a request after revocation: %+v", agent.Seen())
	}

	// The audit log verifies while the server runs.
	var v struct {
		OK      bool `json:"ok"`
		Entries int  `json:"entries"`
	}
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "audit", "verify", "--json")), &v); err != nil || !v.OK || v.Entries < 5 {
		t.Errorf("audit verify = %+v, %v", v, err)
	}

	// SIGTERM shuts down cleanly.
	srv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-srv.exited:
		if !srv.cmd.ProcessState.Success() {
			t.Errorf("serve exited with %v after SIGTERM; stderr:\n%s", srv.cmd.ProcessState, srv.stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Error("serve did not stop within 20s of SIGTERM")
	}
}

type connCounter struct {
	mu sync.Mutex
	n  int
}

func (c *connCounter) count() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

// deviceClient is an HTTP client that presents the enrolled device's
// certificate, trusts only hearth's root and counts its TLS connections.
func deviceClient(t *testing.T, devDir string) (*http.Client, *connCounter) {
	t.Helper()
	cfg := deviceTLS(t, devDir)
	cfg.ServerName = "localhost"
	cc := &connCounter{}
	tr := &http.Transport{
		TLSClientConfig: cfg,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			cc.mu.Lock()
			cc.n++
			cc.mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		MaxConnsPerHost: 1,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, cc
}

// treeDigest summarises every file's path, mode, size and content.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d\n", p, fi.Mode(), fi.Size())
		if !fi.IsDir() {
			c, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "%x\n", c)
		}
		return nil
	})
	return b.String()
}
