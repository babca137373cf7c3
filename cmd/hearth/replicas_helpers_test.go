package main

// The harness of the replica tests and benchmarks: real `hearth serve`
// processes sharing one PostgreSQL database of a throwaway cluster
// (internal/pgtest), each with its own data dir copied from one `hearth
// init` (the same CA keys, provisioner key, audit signing key and
// hearth.yaml), as the README's "Replicas on PostgreSQL" tells an
// operator to do.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/sampleagent"
)

// replicaSet is hearth's data dirs for n replicas on one database.
type replicaSet struct {
	db       *pgtest.DB
	dsn      string // no password: passfile= names a 0600 file
	dirs     []string
	init     initOut
	agent    *sampleagent.Agent
	upstream string
	srvs     []*served
	root     *x509.CertPool
}

// passfileDSN turns pgtest's URL (which carries the password) into the
// form hearth accepts: keyword=value without a password, and passfile=
// naming a file of mode 0600 in libpq's .pgpass format.
func passfileDSN(t testing.TB, dsnURL string) string {
	t.Helper()
	u, err := url.Parse(dsnURL)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	db := strings.TrimPrefix(u.Path, "/")
	pass := filepath.Join(t.TempDir(), "pgpass")
	line := fmt.Sprintf("%s:%s:%s:%s:%s\n", u.Hostname(), u.Port(), db, u.User.Username(), pw)
	if err := os.WriteFile(pass, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("host=%s port=%s dbname=%s user=%s sslmode=disable passfile=%s", u.Hostname(), u.Port(), db, u.User.Username(), pass)
}

// newReplicaSet makes an empty database and n data dirs: `hearth init`
// once, then copies of it. edit, if not nil, changes hearth.yaml first.
func newReplicaSet(t testing.TB, n int, edit func(string) string) *replicaSet {
	t.Helper()
	rs := &replicaSet{db: pgtest.New(t)}
	rs.dsn = passfileDSN(t, rs.db.DSN)
	first := filepath.Join(t.TempDir(), "a")
	out, errOut, err := hearthCmd(t, first, "", "init", "--owner", "alice", "--agent", "sample", "--json")
	if err != nil {
		t.Fatalf("hearth init: %v\n%s", err, errOut)
	}
	if err := json.Unmarshal([]byte(out), &rs.init); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		p := filepath.Join(first, "hearth.yaml")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(edit(string(b))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rs.dirs = []string{first}
	for i := 1; i < n; i++ {
		d := filepath.Join(t.TempDir(), string(rune('a'+i)))
		if out, err := exec.Command("cp", "-a", first, d).CombinedOutput(); err != nil {
			t.Fatalf("copying the data dir: %v\n%s", err, out)
		}
		rs.dirs = append(rs.dirs, d)
	}
	pem, err := os.ReadFile(rs.init.RootCert)
	if err != nil {
		t.Fatal(err)
	}
	rs.root = x509.NewCertPool()
	if !rs.root.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", rs.init.RootCert)
	}
	rs.agent, rs.upstream = startAgent(t)
	return rs
}

// startAll starts `hearth serve --store-dsn` in every data dir at the same
// moment (an empty database: their migrations race) and waits for all.
func (rs *replicaSet) startAll(t testing.TB, extra ...string) {
	t.Helper()
	rs.srvs = make([]*served, len(rs.dirs))
	var wg sync.WaitGroup
	errs := make([]string, len(rs.dirs))
	start := make(chan struct{})
	for i, d := range rs.dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			rs.srvs[i], errs[i] = startServeNoFatal(t, d, rs.upstream, append([]string{"--store-dsn", rs.dsn}, extra...)...)
		}()
	}
	close(start)
	wg.Wait()
	for i, e := range errs {
		if e != "" {
			t.Fatalf("replica %d: %s", i, e)
		}
	}
}

// startServeNoFatal is startServe for another goroutine than the test's:
// it reports a failure to start instead of calling t.Fatal.
func startServeNoFatal(t testing.TB, dir, upstream string, extra ...string) (*served, string) {
	args := append([]string{"serve", "--dir", dir, "--listen", "127.0.0.1:0", "--ca-listen", "127.0.0.1:0", "--upstream", upstream}, extra...)
	cmd := exec.Command(hearthBin, args...)
	pr, pw := io.Pipe()
	buf := &lockedBuffer{}
	cmd.Stderr = io.MultiWriter(pw, buf)
	if err := cmd.Start(); err != nil {
		return nil, err.Error()
	}
	s := &served{cmd: cmd, stderr: buf, exited: make(chan struct{})}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.exited
	})
	found := make(chan []string, 1)
	go func() {
		b := make([]byte, 0, 4096)
		chunk := make([]byte, 1024)
		for {
			n, err := pr.Read(chunk)
			b = append(b, chunk[:n]...)
			if m := servingRE.FindSubmatch(b); m != nil {
				found <- []string{string(m[1]), string(m[2])}
				io.Copy(io.Discard, pr)
				return
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		close(s.exited)
	}()
	select {
	case m := <-found:
		s.gateway, s.ca = m[0], m[1]
		return s, ""
	case <-s.exited:
		return nil, "hearth serve exited: " + buf.String()
	case <-time.After(90 * time.Second):
		return nil, "hearth serve did not start; stderr:\n" + buf.String()
	}
}

// client is an HTTPS client of the gateways that trusts only hearth's
// root, presenting cfg's certificate if any.
func (rs *replicaSet) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: rs.root, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 64}}
}

// do sends one request and returns the status and body (status 0 and the
// error text when no answer came).
func do(c *http.Client, method, url, bearer string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		return 0, []byte(err.Error())
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b
}

// addDevice runs `hearth device add` on replica i and returns the token.
func (rs *replicaSet) addDevice(t testing.TB, i int, name, caps string) string {
	t.Helper()
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(mustHearth(t, rs.dirs[i], "device", "add", name, "--caps", caps, "--json")), &tok); err != nil || tok.Token == "" {
		t.Fatalf("device add %s: %v %+v", name, err, tok)
	}
	return tok.Token
}

// enroll enrolls a device with `hearth enroll` through replica i's
// gateway and returns its key pair.
func (rs *replicaSet) enroll(t testing.TB, i int, token string) tls.Certificate {
	t.Helper()
	devDir := filepath.Join(t.TempDir(), "dev")
	mustHearth(t, rs.dirs[i], "enroll", "--ca-url", "https://"+rs.srvs[i].gateway, "--fingerprint", rs.init.Fingerprint, "--token", token, "--out", devDir)
	cert, err := tls.LoadX509KeyPair(filepath.Join(devDir, "device.crt"), filepath.Join(devDir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// waitStatus polls GET url with c every 10 ms until it answers one of
// want, and returns how long that took after since (or fails after max).
func waitStatus(t *testing.T, c *http.Client, url, bearer string, since time.Time, max time.Duration, want ...int) time.Duration {
	t.Helper()
	for {
		st, body := do(c, http.MethodGet, url, bearer, nil)
		for _, w := range want {
			if st == w {
				return time.Since(since)
			}
		}
		if time.Since(since) > max {
			t.Fatalf("GET %s still answers %d %s after %v, want one of %v", url, st, body, max, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// auditEntries returns the entries of event name in the replicas' one
// audit history in PostgreSQL, exported to a file log (`hearth audit
// export --store-dsn`, which verifies as it copies) and read with `hearth
// audit tail --json`.
func (rs *replicaSet) auditEntries(t *testing.T, name string, extra ...string) []map[string]any {
	t.Helper()
	out := filepath.Join(t.TempDir(), "export")
	mustHearth(t, rs.dirs[0], "audit", "export", "--store-dsn", rs.dsn, "--out", out)
	return auditEntries(t, out, name, extra...)
}

// verifyAudit runs `hearth audit verify --store-dsn` on the history in
// PostgreSQL, with the key of the data dirs' audit/log.pub, and returns
// how many entries it holds.
func (rs *replicaSet) verifyAudit(t *testing.T) int {
	t.Helper()
	var v struct {
		OK      bool   `json:"ok"`
		Entries int    `json:"entries"`
		Error   string `json:"error"`
	}
	out, errOut, err := hearthCmd(t, rs.dirs[len(rs.dirs)-1], "", "audit", "verify", "--store-dsn", rs.dsn, "--json")
	if jerr := json.Unmarshal([]byte(out), &v); err != nil || jerr != nil || !v.OK {
		t.Errorf("audit verify --store-dsn: %v %+v\n%s%s", err, v, out, errOut)
	}
	return v.Entries
}

// auditEntries returns the entries of dir's audit log (`hearth audit tail
// --json`) that have event name.
func auditEntries(t *testing.T, dir, name string, extra ...string) []map[string]any {
	t.Helper()
	out := mustHearth(t, dir, append([]string{"audit", "tail", "--json", "-n", "1000000", "--event", name}, extra...)...)
	var es []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit tail line %q: %v", l, err)
		}
		es = append(es, e)
	}
	return es
}
