package audit

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// goldenEvents is the fixed history of the golden log.
func goldenEvents(l *Log) []Event {
	return []Event{
		{Name: EventAuthLogin, Outcome: OutcomeFailure, Principal: "user:alice", Reason: "wrong password", Client: "192.168.1.23:50123", Meta: map[string]string{"method": "password", "zone": "lan"}},
		{Name: EventAuthLogin, Outcome: OutcomeSuccess, Principal: "user:alice", Client: "192.168.1.23:50124", Meta: map[string]string{"method": "password", "mfa": "totp"}},
		{Name: EventTokenIssue, Outcome: OutcomeSuccess, Principal: "user:alice", Meta: map[string]string{"token_id": l.SecretID([]byte("not a real token"))}},
		{Name: EventDeviceAdd, Outcome: OutcomeSuccess, Principal: "user:alice", Resource: "device:kitchen-pi", Meta: map[string]string{"caps": "system:read"}},
		{Name: EventAuthzDecision, Outcome: OutcomeDeny, Principal: "device:kitchen-pi", Resource: "/api/plugins/install", Reason: "plugins:install needs a device or local session", Client: "192.168.1.40:40000", Meta: map[string]string{"capability": "plugins:install", "method": "POST"}},
		{Name: EventCertRevoke, Outcome: OutcomeSuccess, Principal: "user:local", Resource: "device:kitchen-pi", Reason: "lost <phone> & \"quotes\" ünïcode"},
	}
}

// TestGolden builds a log with the fixed test key and clock and compares
// its segment and checkpoints with testdata/golden (go test -update
// rewrites them); then it verifies the golden files themselves, so that a
// format change that breaks old logs is caught.
func TestGolden(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{}, Options{})
	for _, e := range goldenEvents(l) {
		mustRecord(t, l, e)
	}
	vkey := l.VerifierKey()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"entries.log": auditPath(dir, SegmentsDir, segmentName(0)),
		"checkpoints": auditPath(dir, CheckpointsFile),
		"hashes":      auditPath(dir, HashesFile),
		"log.pub":     auditPath(dir, VerifierKeyFile),
	}
	gdir := filepath.Join("testdata", "golden")
	for name, path := range files {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		gpath := filepath.Join(gdir, name)
		if *update {
			os.MkdirAll(gdir, 0o755)
			if err := os.WriteFile(gpath, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(gpath)
		if err != nil {
			t.Fatalf("%v (run go test -run TestGolden -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s:\n got: %q\nwant: %q", path, gpath, got, want)
		}
	}

	// The golden files, copied into a fresh data dir, verify with the
	// test key given explicitly.
	vdir := t.TempDir()
	for _, d := range []string{DirName, filepath.Join(DirName, SegmentsDir)} {
		os.MkdirAll(filepath.Join(vdir, d), 0o700)
	}
	for name, path := range files {
		b, err := os.ReadFile(filepath.Join(gdir, name))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(vdir, DirName, path[len(auditPath(dir))+1:]), b, 0o600)
	}
	res := mustVerify(t, vdir, VerifyOptions{VerifierKey: vkey})
	if res.Entries != 7 || res.Checkpoints != 7 {
		t.Errorf("golden log: %d entries, %d checkpoints; want 7 and 7", res.Entries, res.Checkpoints)
	}
	// And no entry holds the token it names.
	b, _ := os.ReadFile(filepath.Join(gdir, "entries.log"))
	if bytes.Contains(b, []byte("not a real token")) {
		t.Error("a secret reached the log")
	}
}
