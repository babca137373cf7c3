package audit

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
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
		"00000000.seg": auditPath(dir, SegmentsDir, segmentName(0)),
		"checkpoints":  auditPath(dir, CheckpointsFile),
		"hashes":       auditPath(dir, HashesFile),
		"log.pub":      auditPath(dir, VerifierKeyFile),
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
	b, _ := os.ReadFile(filepath.Join(gdir, "00000000.seg"))
	if bytes.Contains(b, []byte("not a real token")) {
		t.Error("a secret reached the log")
	}
}

// legacyTestDir makes a data dir holding the golden legacy log (written
// before the C2SP checkpoints and the framed segments) with the keys that
// wrote it: the fixed test key under its old name.
func legacyTestDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	adir := filepath.Join(dir, DirName)
	for _, d := range []string{adir, filepath.Join(adir, SegmentsDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	rnd := testRand()
	var id [8]byte
	io.ReadFull(rnd, id[:])
	skey, vkey, err := note.GenerateKey(rnd, "hearth-audit-"+hex.EncodeToString(id[:]))
	if err != nil {
		t.Fatal(err)
	}
	var mk [32]byte
	io.ReadFull(rnd, mk[:])
	files := map[string][]byte{
		SigningKeyFile:  []byte(skey + "\n"),
		VerifierKeyFile: []byte(vkey + "\n"),
		HMACKeyFile:     []byte(base64.StdEncoding.EncodeToString(mk[:]) + "\n"),
	}
	for name, golden := range map[string]string{
		CheckpointsFile: "checkpoints",
		HashesFile:      "hashes",
		filepath.Join(SegmentsDir, legacySegmentName(0)): "entries.log",
	} {
		b, err := os.ReadFile(filepath.Join("testdata", "legacy", golden))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	want, _ := os.ReadFile(filepath.Join("testdata", "legacy", "log.pub"))
	if string(want) != vkey+"\n" {
		t.Fatalf("the legacy test key is %s, the golden log.pub %s", vkey, want)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(adir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestLegacyLog: a log written before the C2SP format verifies as it is;
// opened, it goes on in a framed segment from the next index, with C2SP
// checkpoints whose tree covers the legacy entries (no gap), and the whole
// verifies: legacy checkpoints, then new ones.
func TestLegacyLog(t *testing.T) {
	dir := legacyTestDir(t)
	res := mustVerify(t, dir, VerifyOptions{})
	if res.Entries != 7 || res.Checkpoints != 7 {
		t.Fatalf("legacy log: %d entries, %d checkpoints; want 7 and 7", res.Entries, res.Checkpoints)
	}
	legacyRoot := res.Root
	cps, _ := os.ReadFile(auditPath(dir, CheckpointsFile))
	recs, _, _ := splitCheckpoints(cps)
	saved := recs[len(recs)-1].msg

	l := openTest(t, dir, Config{}, Options{})
	for i := range 5 {
		mustRecord(t, l, testEvent(i))
	}
	cp, msg := l.Checkpoint()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if cp.Size != 13 || cp.Legacy || bytes.HasPrefix(msg, []byte(LegacyCheckpointHeader)) {
		t.Fatalf("after the upgrade the checkpoint is %+v:\n%s", cp, msg)
	}
	if _, err := os.Stat(auditPath(dir, SegmentsDir, segmentName(7))); err != nil {
		t.Fatalf("no framed segment from entry 7: %v", err)
	}
	res = mustVerify(t, dir, VerifyOptions{Checkpoint: saved, Strict: true})
	if res.Entries != 13 || res.Checkpoints != 7+6 {
		t.Fatalf("upgraded log: %d entries, %d checkpoints; want 13 and 13", res.Entries, res.Checkpoints)
	}
	// The consistency proof from the last legacy checkpoint to the new one
	// holds: one tree.
	l = openTest(t, dir, Config{}, Options{})
	defer l.Close()
	p, err := l.ProveConsistency(7, 13)
	if err != nil {
		t.Fatal(err)
	}
	old, err := ParseCheckpoint(noteText(saved))
	if err != nil || old.Hash.String() != legacyRoot {
		t.Fatalf("legacy checkpoint %+v, %v", old, err)
	}
	if err := CheckConsistency(p, old, cp); err != nil {
		t.Fatalf("legacy to C2SP: %v", err)
	}
	// Entry tiles span the legacy and the framed segment; twice, the
	// second time from the bundle index.
	for range 2 {
		bundle, err := l.entryBundle(tlog.Tile{H: 8, L: -1, N: 0, W: 13})
		if err != nil {
			t.Fatal(err)
		}
		for i := int64(0); i < 13; i++ {
			e, rest, err := torchwood.ReadTileEntry(bundle)
			if err != nil || !indexPrefix(e, i) {
				t.Fatalf("entry %d of the bundle: %q, %v", i, e, err)
			}
			bundle = rest
		}
		if len(bundle) != 0 {
			t.Fatalf("%d bytes after the bundle's entries", len(bundle))
		}
	}
}
