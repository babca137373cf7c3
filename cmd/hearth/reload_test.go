package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// enrollDevice adds device name with caps through the running server and
// enrolls it with `hearth enroll`; it returns the device's directory.
func enrollDevice(t *testing.T, dir, gateway, fingerprint, name, caps string) string {
	t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "device", "add", name, "--caps", caps, "--json")), &tok); err != nil {
		t.Fatal(err)
	}
	devDir := filepath.Join(t.TempDir(), "device-"+name)
	mustHearth(t, dir, "enroll", "--ca-url", "https://"+gateway, "--fingerprint", fingerprint, "--token", tok.Token, "--out", devDir)
	return devDir
}

// editYAML rewrites the data dir's hearth.yaml with f, which must change it.
func editYAML(t *testing.T, dir string, f func(string) string) {
	t.Helper()
	p := filepath.Join(dir, "hearth.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	out := f(string(b))
	if out == string(b) {
		t.Fatal("the edit changed nothing in hearth.yaml")
	}
	if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
}

// configChanges returns the outcomes of the config.change entries, in order.
func configChanges(t *testing.T, dir string) []map[string]any {
	t.Helper()
	out := mustHearth(t, dir, "audit", "tail", "--json", "-n", "1000", "--event", "config.change")
	var es []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit tail --json line %q: %v", sc.Text(), err)
		}
		es = append(es, e)
	}
	return es
}

// A good hearth.yaml applied by `hearth reload` and a broken one sent by
// SIGHUP and by `hearth reload`, while a device keeps making requests on one
// kept-alive connection: no request fails, the connection stays the same,
// the good change takes effect, the broken one is refused with the running
// configuration kept, and each is a config.change entry in the audit log.
func TestReloadUnderTraffic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var in initOut
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "init", "--owner", "alice", "--agent", "sample", "--json")), &in); err != nil {
		t.Fatal(err)
	}
	agent, upstream := startAgent(t)
	srv := startServe(t, dir, upstream)
	client, conns := deviceClient(t, enrollDevice(t, dir, srv.gateway, in.Fingerprint, "pi", "system:read"))
	get := func(path string) (int, error) {
		resp, err := client.Get("https://" + srv.gateway + path)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if st, err := get("/api/settings"); err != nil || st != http.StatusForbidden {
		t.Fatalf("GET /api/settings as system:read before the reload = %d, %v; want 403", st, err)
	}
	if strings.Contains(srv.stderr.String(), "metrics on") {
		t.Errorf("serve without --metrics-listen serves metrics; stderr:\n%s", srv.stderr.String())
	}

	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		ok, bad  atomic.Int64
		mu       sync.Mutex
		failures []string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			st, err := get("/api/status")
			if err != nil || st != http.StatusOK {
				bad.Add(1)
				mu.Lock()
				failures = append(failures, http.StatusText(st)+" "+errString(err))
				mu.Unlock()
				continue
			}
			ok.Add(1)
		}
	}()
	waitFor := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for ok.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("traffic stalled at %d requests", ok.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(20)

	// A good change: reading settings needs only status now.
	editYAML(t, dir, func(s string) string {
		return strings.Replace(s, `{ path: "/api/settings",        methods: [GET, PUT],  capability: "settings:modify" }`,
			`{ path: "/api/settings",        methods: [GET],       capability: "status" }`, 1)
	})
	if out := mustHearth(t, dir, "reload"); !strings.Contains(out, "applied") {
		t.Errorf("hearth reload = %q, want it to say the file was applied", out)
	}
	if st, err := get("/api/settings"); err != nil || st != http.StatusOK {
		t.Errorf("GET /api/settings after the good reload = %d, %v; want 200", st, err)
	}
	waitFor(ok.Load() + 20)

	// A broken change, by SIGHUP: refused, the running configuration kept.
	editYAML(t, dir, func(s string) string {
		return strings.Replace(s, `capability: "status" }`, `capability: "no:such" }`, 1)
	})
	// config check names it with its line, offline.
	out, _, err := hearthCmd(t, dir, "", "config", "check")
	if err == nil || !regexp.MustCompile(`hearth\.yaml:\d+: gateway\.routes\[\d\]: .*no:such`).MatchString(out) {
		t.Errorf("config check of the broken file = %v, %q; want a failure naming the route's line and no:such", err, out)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(configChanges(t, dir)) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no config.change entry after SIGHUP; serve stderr:\n%s", srv.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The same broken file through the socket: the command says why.
	_, stderr, err := hearthCmd(t, dir, "", "reload")
	if err == nil || !strings.Contains(stderr, "no:such") || !strings.Contains(stderr, "kept") {
		t.Errorf("hearth reload of a broken file = %v, stderr %q; want a failure naming no:such and saying the running configuration is kept", err, stderr)
	}
	if st, err := get("/api/settings"); err != nil || st != http.StatusOK {
		t.Errorf("GET /api/settings after the refused reloads = %d, %v; want 200 (the good configuration kept)", st, err)
	}
	waitFor(ok.Load() + 20)
	close(stop)
	wg.Wait()

	if n := bad.Load(); n != 0 {
		t.Errorf("%d of %d requests failed during the reloads: %v", n, n+ok.Load(), failures)
	}
	if n := conns.count(); n != 1 {
		t.Errorf("the device used %d TLS connections, want 1 (reloads drop no connection)", n)
	}
	es := configChanges(t, dir)
	var outcomes, vias []string
	for _, e := range es {
		outcomes = append(outcomes, e["outcome"].(string))
		meta, _ := e["meta"].(map[string]any)
		vias = append(vias, meta["via"].(string))
	}
	if strings.Join(outcomes, ",") != "success,success,failure,failure" || strings.Join(vias, ",") != "start,socket,signal,socket" {
		t.Errorf("config.change entries: outcomes %v via %v; want success,success,failure,failure via start,socket,signal,socket", outcomes, vias)
	}
	if len(es) == 4 && !strings.Contains(es[2]["reason"].(string), "no:such") {
		t.Errorf("the refused reload's entry = %v, want its reason to name the bad capability", es[1])
	}
	if n := len(agent.Seen()); n < 60 {
		t.Errorf("the agent saw %d requests, want at least 60", n)
	}
	var v struct {
		OK bool `json:"ok"`
	}
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "audit", "verify", "--json")), &v); err != nil || !v.OK {
		t.Errorf("audit verify after the reloads = %+v, %v", v, err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
