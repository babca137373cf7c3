package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCrashLosesNoAcknowledgedEntry runs the real binary under load and
// kills it with SIGKILL at random moments, many times. Every gateway
// decision is written to the audit log before the answer is sent, so every
// answer a client received names an entry that must survive: after all
// the cycles the log verifies and holds every acknowledged request.
func TestCrashLosesNoAcknowledgedEntry(t *testing.T) {
	cycles := 25
	if s := os.Getenv("HEARTH_CRASH_CYCLES"); s != "" {
		cycles, _ = strconv.Atoi(s)
	}
	dir := filepath.Join(t.TempDir(), "data")
	var in initOut
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "init", "--agent", "sample", "--json")), &in); err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(in.RootCert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootPEM)
	_, upstream := startAgent(t)

	var mu sync.Mutex
	acked := map[string]bool{}
	next := 0
	for c := 0; c < cycles; c++ {
		srv := startServe(t, dir, upstream)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					mu.Lock()
					next++
					path := fmt.Sprintf("/api/conversations/crash-%d", next)
					mu.Unlock()
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+srv.gateway+path, nil)
					resp, err := client.Do(req)
					if err != nil {
						continue
					}
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					// 401: the decision (deny, no credentials) was durable
					// before the answer was written.
					if err == nil && resp.StatusCode == http.StatusUnauthorized {
						mu.Lock()
						acked[path] = true
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(50+rand.IntN(400)) * time.Millisecond)
		srv.cmd.Process.Kill()
		<-srv.exited
		cancel()
		wg.Wait()
		tr.CloseIdleConnections()
	}
	if len(acked) < cycles {
		t.Fatalf("only %d requests were acknowledged in %d cycles: the load did not run", len(acked), cycles)
	}

	// Right after the last kill, before any restart: the signed history
	// verifies (exit 0), and an unacknowledged tail, if the kill left one,
	// is named, not failed.
	var crashed struct {
		OK       bool `json:"ok"`
		Unsigned *struct {
			Entries int64  `json:"entries"`
			Segment string `json:"segment"`
		} `json:"unsigned"`
	}
	out, errOut, err := hearthCmd(t, dir, "", "audit", "verify", "--json")
	if json.Unmarshal([]byte(out), &crashed) != nil || !crashed.OK || err != nil {
		t.Fatalf("audit verify right after kill -9: %v\n%s%s", err, out, errOut)
	}
	if crashed.Unsigned != nil {
		t.Logf("the last kill left an unsigned tail of %d entries in %s", crashed.Unsigned.Entries, crashed.Unsigned.Segment)
	}

	// Startup repairs what the last kill left (a tail no checkpoint
	// covers, never acknowledged); a clean stop follows.
	srv := startServe(t, dir, upstream)
	srv.cmd.Process.Signal(os.Interrupt)
	<-srv.exited

	var v struct {
		OK      bool   `json:"ok"`
		Entries int    `json:"entries"`
		Error   string `json:"error"`
	}
	out, errOut, err = hearthCmd(t, dir, "", "audit", "verify", "--json")
	if json.Unmarshal([]byte(out), &v) != nil || !v.OK || err != nil {
		t.Fatalf("audit verify after %d crashes: %v %+v\n%s%s", cycles, err, v, out, errOut)
	}
	out, errOut, err = hearthCmd(t, dir, "", "audit", "tail", "-n", "100000000", "--json", "--event", "authz.decision")
	if err != nil {
		t.Fatalf("audit tail: %v\n%s", err, errOut)
	}
	logged := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e struct {
			Resource string `json:"resource"`
			Outcome  string `json:"outcome"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit tail line %q: %v", sc.Text(), err)
		}
		logged[e.Resource] = true
	}
	missing := 0
	for p := range acked {
		if !logged[p] {
			missing++
			if missing < 5 {
				t.Errorf("acknowledged request %s is not in the audit log", p)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged requests missing from the log", missing, len(acked))
	}
	t.Logf("%d cycles, %d acknowledged requests, %d entries, all present", cycles, len(acked), v.Entries)
}
