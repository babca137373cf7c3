package main

// Helpers for the interop tests: they drive the real hearth binary (built
// once in TestMain) with clients hearth did not write — curl, openssl
// s_client and the step CLI — over loopback. A missing client fails the
// test with the command that installs it: CI installs them in .ci/run.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/sampleagent"
)

// interopTool finds an external client on PATH (or, for step, in
// $(go env GOPATH)/bin) and fails the test with how to install it.
func interopTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if name == "step" {
		if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "step")
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
		t.Fatal("the step CLI is not installed; install it with: CGO_ENABLED=0 go install github.com/smallstep/cli/cmd/step@v0.21.0")
	}
	t.Fatalf("%s is not installed; install it with: apt-get install -y curl openssl", name)
	return ""
}

// interopHearth is one running `hearth serve` in front of the sample
// agent, with the data dir's root and fingerprint.
type interopHearth struct {
	dir         string
	init        initOut // what `hearth init --json` printed
	fingerprint string
	rootFile    string // the root certificate (PEM), as a client would hold it
	agent       *sampleagent.Agent
	srv         *served
	curl        string
}

// startInteropHearth runs init and serve on loopback ports; edit, when not
// nil, may change hearth.yaml between the two.
func startInteropHearth(t *testing.T, edit func(yaml string) string) *interopHearth {
	t.Helper()
	h := &interopHearth{dir: filepath.Join(t.TempDir(), "data"), curl: interopTool(t, "curl")}
	var in initOut
	if err := json.Unmarshal([]byte(mustHearth(t, h.dir, "init", "--owner", "alice", "--agent", "sample", "--json")), &in); err != nil {
		t.Fatal(err)
	}
	h.init, h.fingerprint, h.rootFile = in, in.Fingerprint, in.RootCert
	if edit != nil {
		p := filepath.Join(h.dir, "hearth.yaml")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(edit(string(b))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var upstream string
	h.agent, upstream = startAgent(t)
	h.srv = startServe(t, h.dir, upstream)
	return h
}

// stop sends SIGTERM and requires a clean exit with no data race reported
// (the binary runs under -race when the tests do): the interop traffic
// above is also a race test of the real server.
func (h *interopHearth) stop(t *testing.T) {
	t.Helper()
	h.srv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.srv.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not stop within 20s of SIGTERM; stderr:\n%s", h.srv.stderr.String())
	}
	if !h.srv.cmd.ProcessState.Success() || strings.Contains(h.srv.stderr.String(), "DATA RACE") {
		t.Errorf("serve exited with %v after SIGTERM; stderr:\n%s", h.srv.cmd.ProcessState, h.srv.stderr.String())
	}
}

// base is the gateway's URL.
func (h *interopHearth) base() string { return "https://" + h.srv.gateway }

// enroll adds a device with caps and enrolls it with `hearth enroll`; it
// returns the device's directory (device.crt, device.key, root.crt).
func (h *interopHearth) enroll(t *testing.T, name, caps string) string {
	t.Helper()
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(mustHearth(t, h.dir, "device", "add", name, "--caps", caps, "--json")), &tok); err != nil {
		t.Fatal(err)
	}
	devDir := filepath.Join(t.TempDir(), name)
	mustHearth(t, h.dir, "enroll", "--ca-url", h.base(), "--fingerprint", h.fingerprint, "--token", tok.Token, "--out", devDir)
	return devDir
}

// seen returns the agent's requests for path.
func (h *interopHearth) seen(path string) []sampleagent.Seen {
	var out []sampleagent.Seen
	for _, s := range h.agent.Seen() {
		if s.Path == path {
			out = append(out, s)
		}
	}
	return out
}

// curlResult is what one curl run saw.
type curlResult struct {
	exit    int // curl's exit status (0 on any HTTP answer)
	status  int
	version string // %{http_version}: "1.1", "2"
	header  http.Header
	body    []byte
	stderr  string
}

// devCurlArgs are curl's arguments to present devDir's certificate.
func devCurlArgs(devDir string) []string {
	return []string{"--cert", filepath.Join(devDir, "device.crt"), "--key", filepath.Join(devDir, "device.key")}
}

// curlDo runs curl against the gateway, trusting only hearth's root
// (--cacert; curl also checks the name 127.0.0.1 against the gateway
// certificate's IP SAN).
func (h *interopHearth) curlDo(t *testing.T, args ...string) curlResult {
	t.Helper()
	tmp := t.TempDir()
	hdr, body := filepath.Join(tmp, "h"), filepath.Join(tmp, "b")
	full := append([]string{"-sS", "--max-time", "30", "--cacert", h.rootFile,
		"-D", hdr, "-o", body, "-w", "%{http_code} %{http_version}"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.curl, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := curlResult{stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	case err != nil:
		t.Fatalf("curl %v: %v", args, err)
	}
	if f := strings.Fields(out.String()); len(f) == 2 {
		r.version = f[1]
		if n, err := parseStatus(f[0]); err == nil {
			r.status = n
		}
	}
	r.body, _ = os.ReadFile(body)
	r.header = http.Header{}
	if raw, err := os.ReadFile(hdr); err == nil {
		// -D holds the status line then MIME headers; keep the last block
		// (a 100-continue or upgrade block may come first).
		blocks := strings.Split(strings.ReplaceAll(string(raw), "\r\n", "\n"), "\n\n")
		last := ""
		for _, b := range blocks {
			if strings.TrimSpace(b) != "" {
				last = b
			}
		}
		if _, rest, ok := strings.Cut(last, "\n"); ok {
			tp := textproto.NewReader(bufio.NewReader(strings.NewReader(rest + "\n\n")))
			if m, err := tp.ReadMIMEHeader(); err == nil || len(m) > 0 {
				r.header = http.Header(m)
			}
		}
	}
	return r
}

func parseStatus(s string) (int, error) {
	var n int
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("not a status")
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// jsonError decodes hearth's {"error", "code"} body.
func jsonError(t *testing.T, b []byte) (code, msg string) {
	t.Helper()
	var e struct{ Error, Code string }
	if err := json.Unmarshal(b, &e); err != nil {
		t.Errorf("body %q is not hearth's JSON error: %v", b, err)
	}
	return e.Code, e.Error
}

// readPEMCert reads the first certificate of a PEM file.
func readPEMCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runTool runs an external command with stdin and returns its combined
// output and exit status.
func runTool(t *testing.T, dir, stdin string, env []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out), 0
}
