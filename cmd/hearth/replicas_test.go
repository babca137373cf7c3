package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// replicaBound is the bound: a change made on one replica holds on
// every other within this long.
const replicaBound = time.Second

// TestReplicas runs two `hearth serve` processes on one PostgreSQL
// database, started at the same moment on an empty database, and checks
// what must hold across them: an enrollment token is used once whichever
// replica (and whichever client: hearth enroll or step ca certificate)
// presents it; a revocation and a logout on A are refused on B within 1 s,
// also after B's feed listener is killed; failed logins spread over both
// lock the account with no more than the limit reaching the password
// check; B keeps serving while A is killed with SIGKILL; and the audit
// history verifies afterwards with every acknowledged request in it.
func TestReplicas(t *testing.T) {
	step := interopTool(t, "step")
	rs := newReplicaSet(t, 2, func(y string) string {
		// The per-address login bucket (10 attempts) would answer before
		// the per-account lockout this test is about: widen it.
		const at = "\nauth:\n"
		if !strings.Contains(y, at) {
			t.Fatalf("hearth.yaml has no auth section:\n%s", y)
		}
		return strings.Replace(y, at, at+"  client_burst: 1000\n", 1)
	})
	rs.startAll(t)
	a, b := rs.srvs[0], rs.srvs[1]
	anon := rs.client(nil)
	for i, s := range rs.srvs {
		if st, body := do(anon, http.MethodGet, "https://"+s.gateway+"/.hearth/readyz", "", nil); st != http.StatusOK {
			t.Fatalf("replica %d readyz = %d %s\nstderr:\n%s", i, st, body, s.stderr.String())
		}
	}

	t.Run("one enrollment token, 8 racers over both replicas, one certificate", func(t *testing.T) {
		// Each replica's CA bootstrapped once for step (its own STEPPATH).
		stepPaths := make([]string, 2)
		for i, s := range rs.srvs {
			work := t.TempDir()
			stepPaths[i] = filepath.Join(work, "steppath")
			env := []string{"STEPPATH=" + stepPaths[i], "HOME=" + work}
			if out, code := runTool(t, work, "", env, step, "ca", "bootstrap", "--ca-url", "https://"+s.ca, "--fingerprint", rs.init.Fingerprint); code != 0 {
				t.Fatalf("step ca bootstrap on replica %d: exit %d\n%s", i, code, out)
			}
		}
		// Two trials: each loser is a failed attempt that the CA's
		// per-address budget (10 at once, per replica) counts, and every
		// client here comes from 127.0.0.1.
		const racers, trials = 8, 2
		for trial := range trials {
			name := fmt.Sprintf("race%d", trial)
			tok := rs.addDevice(t, trial%2, name, "system:read")
			cmds := make([]*exec.Cmd, racers)
			for r := range racers {
				work := t.TempDir()
				replica := r % 2
				var c *exec.Cmd
				if r%4 < 2 { // hearth enroll, through the gateway
					c = exec.Command(hearthBin, "enroll", "--ca-url", "https://"+rs.srvs[replica].gateway, "--fingerprint", rs.init.Fingerprint, "--token", tok, "--out", filepath.Join(work, "dev"))
				} else { // step ca certificate, through the CA API
					c = exec.Command(step, "ca", "certificate", name, "dev.crt", "dev.key", "--token", tok)
					c.Env = append(os.Environ(), "STEPPATH="+stepPaths[replica], "HOME="+work)
				}
				c.Dir = work
				cmds[r] = c
			}
			var wg sync.WaitGroup
			var won atomic.Int32
			outs := make([]string, racers)
			gate := make(chan struct{})
			for r, c := range cmds {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-gate
					out, err := c.CombinedOutput()
					outs[r] = string(out)
					if err == nil {
						won.Add(1)
					}
				}()
			}
			close(gate)
			wg.Wait()
			if n := won.Load(); n != 1 {
				t.Errorf("trial %d: %d of %d racers got a certificate for one token, want exactly 1:\n%s", trial, n, racers, strings.Join(outs, "\n---\n"))
			}
		}
		// Exactly one certificate per token in the CA's records too.
		var list struct {
			Devices []struct {
				Name     string `json:"name"`
				Enrolled bool   `json:"enrolled"`
			} `json:"devices"`
		}
		if err := json.Unmarshal([]byte(mustHearth(t, rs.dirs[1], "device", "list", "--json")), &list); err != nil {
			t.Fatal(err)
		}
		devs := list.Devices
		enrolled := 0
		for _, d := range devs {
			if strings.HasPrefix(d.Name, "race") && d.Enrolled {
				enrolled++
			}
		}
		if enrolled != trials {
			t.Errorf("device list on B: %d race devices enrolled, want %d: %+v", enrolled, trials, devs)
		}
	})

	// revokedOnB enrolls a device through A, checks B serves it, runs
	// before (e.g. killing B's listener), revokes it on A and measures how
	// long until B refuses it.
	revokedOnB := func(t *testing.T, name string, before func()) time.Duration {
		cert := rs.enroll(t, 0, rs.addDevice(t, 0, name, "system:read"))
		c := rs.client(&cert)
		url := "https://" + b.gateway + "/api/status"
		if st, body := do(c, http.MethodGet, url, "", nil); st != http.StatusOK {
			t.Fatalf("B serves %s: %d %s, want 200", name, st, body)
		}
		if before != nil {
			before()
		}
		mustHearth(t, rs.dirs[0], "device", "revoke", name)
		return waitStatus(t, c, url, "", time.Now(), replicaBound, http.StatusUnauthorized, http.StatusForbidden)
	}
	t.Run("revoke on A refused on B within 1 s", func(t *testing.T) {
		t.Logf("refused on B %v after the revocation on A", revokedOnB(t, "rev1", nil))
	})
	t.Run("revoke on A refused on B within 1 s after B's listener is killed", func(t *testing.T) {
		admin := rs.db.Admin(t)
		took := revokedOnB(t, "rev2", func() {
			var n int
			if err := admin.QueryRow(context.Background(),
				`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'hearth-feed'`, rs.db.Name).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n < 2 {
				t.Fatalf("terminated %d hearth-feed connections, want one per replica (2)", n)
			}
		})
		t.Logf("refused on B %v after the revocation on A, its listener killed just before", took)
	})

	const pw = "kettle lantern orbit meadow 97"
	if out, errOut, err := hearthCmd(t, rs.dirs[0], pw+"\n", "user", "add", "bob", "--caps", "system:read"); err != nil {
		t.Fatalf("user add bob: %v\n%s%s", err, out, errOut)
	}
	if out, errOut, err := hearthCmd(t, rs.dirs[1], pw+"\n", "user", "add", "carol", "--caps", "system:read"); err != nil {
		t.Fatalf("user add carol: %v\n%s%s", err, out, errOut)
	}
	login := func(s *served, user, password string) (int, string) {
		st, body := do(anon, http.MethodPost, "https://"+s.gateway+"/.hearth/v1/auth/login", "", map[string]string{"username": user, "password": password})
		var ans struct{ Token string }
		json.Unmarshal(body, &ans)
		return st, ans.Token
	}

	t.Run("logout on A refused on B within 1 s", func(t *testing.T) {
		st, tok := login(a, "bob", pw)
		if st != http.StatusOK || tok == "" {
			t.Fatalf("login on A = %d", st)
		}
		// B learns of the new token from the feed (or, when its feed is
		// stale, from the database): within the bound.
		url := "https://" + b.gateway + "/api/status"
		t.Logf("A's token accepted on B %v after the login on A", waitStatus(t, anon, url, tok, time.Now(), replicaBound, http.StatusOK))
		if st, body := do(anon, http.MethodPost, "https://"+a.gateway+"/.hearth/v1/auth/logout", tok, nil); st != http.StatusNoContent {
			t.Fatalf("logout on A = %d %s", st, body)
		}
		t.Logf("token refused on B %v after the logout on A", waitStatus(t, anon, url, tok, time.Now(), replicaBound, http.StatusUnauthorized))
	})

	t.Run("100 failed logins over both replicas lock the account", func(t *testing.T) {
		const attempts, limit = 100, 5 // auth's lockout threshold
		statuses := make([]int, attempts)
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := range attempts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				statuses[i], _ = login(rs.srvs[i%2], "carol", fmt.Sprintf("wrong %d", i))
			}()
		}
		close(gate)
		wg.Wait()
		count := map[int]int{}
		for _, st := range statuses {
			count[st]++
		}
		t.Logf("answers: %v", count)
		if n := count[http.StatusUnauthorized]; n < 1 || n > limit {
			t.Errorf("%d wrong passwords were checked (401), want 1..%d: the rest must be refused before the check", n, limit)
		}
		if n := count[http.StatusUnauthorized] + count[http.StatusTooManyRequests] + count[http.StatusServiceUnavailable]; n != attempts {
			t.Errorf("answers %v: want only 401, 429 and 503", count)
		}
		for i, s := range rs.srvs {
			if st, _ := login(s, "carol", pw); st != http.StatusTooManyRequests {
				t.Errorf("the right password on replica %d after the failures = %d, want 429 (locked)", i, st)
			}
		}
		checked := 0
		for _, e := range rs.auditEntries(t, "auth.login") {
			if e["resource"] == "user:carol" && e["outcome"] == "failure" && e["reason"] == "wrong password or unknown user" {
				checked++
			}
		}
		if checked != count[http.StatusUnauthorized] {
			t.Errorf("the audit history holds %d checked wrong passwords of carol, the clients saw %d", checked, count[http.StatusUnauthorized])
		}
	})

	t.Run("B keeps serving while A is killed with SIGKILL", func(t *testing.T) {
		cert := rs.enroll(t, 1, rs.addDevice(t, 1, "steady", "system:read"))
		c := rs.client(&cert)
		url := "https://" + b.gateway + "/api/status"
		var acked, failed int
		var firstErr string
		deadline := time.Now().Add(2 * time.Second)
		killAt := time.Now().Add(500 * time.Millisecond)
		killed := false
		for time.Now().Before(deadline) {
			if !killed && time.Now().After(killAt) {
				if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				<-a.exited
				killed = true
			}
			if st, body := do(c, http.MethodGet, url, "", nil); st == http.StatusOK {
				acked++
			} else {
				failed++
				if firstErr == "" {
					firstErr = fmt.Sprintf("%d %s", st, body)
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		if failed > 0 || acked == 0 {
			t.Errorf("B answered %d requests and failed %d (first: %s) while A was killed, want every one answered", acked, failed, firstErr)
		}
		got := 0
		for _, e := range rs.auditEntries(t, "authz.decision", "--principal", "device:steady") {
			if e["outcome"] == "allow" {
				got++
			}
		}
		if got < acked {
			t.Errorf("the audit history holds %d allowed requests of device:steady, B acknowledged %d", got, acked)
		}
	})

	t.Run("the audit history verifies", func(t *testing.T) {
		rs.verifyAudit(t)
	})
	// B stops cleanly after all this, and no data race was reported.
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("B did not stop within 20 s of SIGTERM")
	}
	if !b.cmd.ProcessState.Success() || strings.Contains(b.stderr.String(), "DATA RACE") {
		t.Errorf("B exited with %v; stderr:\n%s", b.cmd.ProcessState, b.stderr.String())
	}
}
