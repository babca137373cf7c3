package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
)

// TestBackupUnderLoadRestores takes a backup through the running server's
// admin socket while devices make requests and devices are added, restores
// it into an empty directory, and checks that the restored installation
// serves: its audit log verifies (backup and restore recorded in it) and
// the device enrolled before the backup still reaches the agent with its
// old certificate.
func TestBackupUnderLoadRestores(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var in initOut
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "init", "--owner", "alice", "--agent", "sample", "--json")), &in); err != nil {
		t.Fatal(err)
	}
	_, upstream := startAgent(t)
	srv := startServe(t, dir, upstream)
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "device", "add", "kitchen-pi", "--caps", "system:read", "--json")), &tok); err != nil {
		t.Fatal(err)
	}
	devDir := filepath.Join(t.TempDir(), "device")
	mustHearth(t, dir, "enroll", "--ca-url", "https://"+srv.gateway, "--fingerprint", in.Fingerprint, "--token", tok.Token, "--out", devDir)

	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(t.TempDir(), "backup.key")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Load: four devices' worth of requests (allowed and refused, each
	// audited) and enrollment tokens being added, during the backup.
	client, _ := deviceClient(t, devDir)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var requests, failures atomic.Int64
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			path, want := "/api/status", http.StatusOK
			if i%2 == 1 {
				path, want = "/api/settings", http.StatusForbidden
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get("https://" + srv.gateway + path)
				requests.Add(1)
				if err != nil {
					failures.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					failures.Add(1)
				}
			}
		}(i)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := hearthCmd(t, dir, "", "device", "add", "load-"+string(rune('a'+i%26))+strings.Repeat("x", i/26), "--caps", "system:read"); err != nil {
				failures.Add(1)
			}
		}
	}()
	// A remote principal, even one allowed hearth:admin, never gets an
	// archive of the CA's keys: only the admin socket does.
	adminDev := filepath.Join(t.TempDir(), "admin-device")
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "device", "add", "admin-laptop", "--caps", "system:admin", "--json")), &tok); err != nil {
		t.Fatal(err)
	}
	mustHearth(t, dir, "enroll", "--ca-url", "https://"+srv.gateway, "--fingerprint", in.Fingerprint, "--token", tok.Token, "--out", adminDev)
	adminClient, _ := deviceClient(t, adminDev)
	resp, err := adminClient.Post("https://"+srv.gateway+"/.hearth/v1/admin/backup", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "local_only") {
		t.Errorf("backup over the gateway as a hearth:admin device = %d %s, want 403 local_only", resp.StatusCode, body)
	}

	time.Sleep(300 * time.Millisecond) // let the load start
	archive := filepath.Join(t.TempDir(), "hearth.age")
	out := mustHearth(t, dir, "backup", "--out", archive, "--recipient", id.Recipient().String())
	close(stop)
	wg.Wait()
	if !strings.Contains(out, "snapshot by the running server") {
		t.Errorf("backup while serving said %q, want a snapshot by the running server", out)
	}
	t.Logf("load during the backup: %d gateway requests", requests.Load())
	if n, f := requests.Load(), failures.Load(); n < 10 || f != 0 {
		t.Errorf("load during the backup: %d requests, %d failures; want at least 10 and none failed", n, f)
	}
	if fi, err := os.Stat(archive); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v, %v; want mode 0600", fi, err)
	}
	// A backup never overwrites.
	if _, _, err := hearthCmd(t, dir, "", "backup", "--out", archive, "--recipient", id.Recipient().String()); err == nil {
		t.Error("a second backup over the same file succeeded")
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	<-srv.exited

	// Restore into an existing empty directory (a mount point, a systemd
	// StateDirectory).
	restored := filepath.Join(t.TempDir(), "restored")
	if err := os.Mkdir(restored, 0o755); err != nil {
		t.Fatal(err)
	}
	out = mustHearth(t, restored, "restore", "--in", archive, "--identity", idFile)
	if !strings.Contains(out, "audit log ok:") {
		t.Errorf("restore said %q, want the audit log verified", out)
	}
	if fi, err := os.Stat(restored); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("restored data dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	// A second restore into the now non-empty directory is refused and
	// changes nothing.
	before := treeDigest(t, restored)
	if _, errOut, err := hearthCmd(t, restored, "", "restore", "--in", archive, "--identity", idFile); err == nil || !strings.Contains(errOut, "not empty") {
		t.Errorf("restore over a restored dir: err=%v stderr=%q, want a refusal saying it is not empty", err, errOut)
	}
	if treeDigest(t, restored) != before {
		t.Error("a refused restore changed the directory")
	}
	// A corrupted archive restores nothing.
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	bad := filepath.Join(t.TempDir(), "bad.age")
	os.WriteFile(bad, b, 0o600)
	badDir := filepath.Join(t.TempDir(), "bad")
	if _, _, err := hearthCmd(t, badDir, "", "restore", "--in", bad, "--identity", idFile); err == nil {
		t.Error("restore of a corrupted archive succeeded")
	}
	if _, err := os.Stat(badDir); !os.IsNotExist(err) {
		t.Errorf("a failed restore left %s behind (%v)", badDir, err)
	}

	// The restored installation serves the device enrolled before the
	// backup, and its log verifies and holds the backup and the restore.
	agent2, upstream2 := startAgent(t)
	srv2 := startServe(t, restored, upstream2)
	client2, _ := deviceClient(t, devDir)
	resp, err = client2.Get("https://" + srv2.gateway + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(agent2.Seen()) != 1 || agent2.Seen()[0].Principal != "device:kitchen-pi" {
		t.Errorf("restored hearth: GET /api/status = %d, agent saw %+v; want 200 from device:kitchen-pi", resp.StatusCode, agent2.Seen())
	}
	var v struct {
		OK      bool `json:"ok"`
		Entries int  `json:"entries"`
	}
	if err := json.Unmarshal([]byte(mustHearth(t, restored, "audit", "verify", "--json")), &v); err != nil || !v.OK || v.Entries < 10 {
		t.Errorf("restored audit verify = %+v, %v", v, err)
	}
	if got := mustHearth(t, restored, "audit", "tail", "--event", "backup.create", "--json"); !strings.Contains(got, `"outcome":"deny"`) || !strings.Contains(got, "device:admin-laptop") {
		t.Errorf("the refused remote backup is not in the log: %q", got)
	}
	for _, ev := range []string{"backup.create", "backup.restore"} {
		if got := mustHearth(t, restored, "audit", "tail", "--event", ev, "--json"); !strings.Contains(got, `"event":"`+ev+`"`) {
			t.Errorf("restored log has no %s entry: %q", ev, got)
		}
	}
	// With the server stopped, backup reads the data dir itself.
	srv2.cmd.Process.Signal(syscall.SIGTERM)
	<-srv2.exited
	out = mustHearth(t, restored, "backup", "--out", filepath.Join(t.TempDir(), "offline.age"), "--recipient", id.Recipient().String())
	if !strings.Contains(out, "hearth is not running") {
		t.Errorf("offline backup said %q", out)
	}
}
