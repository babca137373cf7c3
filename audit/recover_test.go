package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	f.Close()
}

func reopenStart(t *testing.T, dir string) Entry {
	t.Helper()
	l := openTest(t, dir, Config{}, Options{})
	defer l.Close()
	es, err := l.Tail(1, nil)
	if err != nil || len(es) != 1 || es[0].Name != EventAuditStart {
		t.Fatalf("after reopen, last entry = %+v, %v", es, err)
	}
	return es[0]
}

func TestRecovery(t *testing.T) {
	seg := func(dir string) string { return auditPath(dir, SegmentsDir, segmentName(0)) }
	line := appendFrame(nil, recEntry, []byte(`{"index":5,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"success"}`))
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		verify  bool // Verify passes before Open repairs
		meta    map[string]string
		entries int64 // after reopen, audit.start included
	}{
		{"clean", func(*testing.T, string) {}, true, map[string]string{"entries": "5"}, 6},
		{"torn entry", func(t *testing.T, dir string) { appendFile(t, seg(dir), line[:30]) }, true,
			map[string]string{"entries": "5", "repaired": "torn entry"}, 6},
		{"unacknowledged entry", func(t *testing.T, dir string) { appendFile(t, seg(dir), line) }, true,
			map[string]string{"entries": "5", "discarded": "1"}, 6},
		{"torn checkpoint", func(t *testing.T, dir string) { tearLastCheckpoint(t, dir) }, true, map[string]string{"entries": "5", "repaired": "torn checkpoint"}, 6},
		{"unacknowledged entry and torn checkpoint", func(t *testing.T, dir string) {
			appendFile(t, seg(dir), line)
			tearLastCheckpoint(t, dir)
		}, true, map[string]string{"entries": "5", "discarded": "1", "repaired": "torn checkpoint"}, 6},
		{"hashes file lost", func(t *testing.T, dir string) { os.Truncate(auditPath(dir, HashesFile), 0) }, true,
			map[string]string{"entries": "5", "repaired": "stored hashes"}, 6},
		{"hashes file torn", func(t *testing.T, dir string) {
			fi, _ := os.Stat(auditPath(dir, HashesFile))
			os.Truncate(auditPath(dir, HashesFile), fi.Size()-40)
		}, true, map[string]string{"entries": "5", "repaired": "stored hashes"}, 6},
		{"hashes file longer", func(t *testing.T, dir string) { appendFile(t, auditPath(dir, HashesFile), make([]byte, 64)) }, true,
			map[string]string{"entries": "5"}, 6},
		{"hashes of the last segment damaged", func(t *testing.T, dir string) {
			// Recomputed at every Open, as they are fsynced lazily.
			b, _ := os.ReadFile(auditPath(dir, HashesFile))
			b[len(b)-1] ^= 1
			os.WriteFile(auditPath(dir, HashesFile), b, 0o600)
		}, false, map[string]string{"entries": "5"}, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := smallLog(t, 4, 0)
			tt.damage(t, dir)
			if _, err := Verify(dir, VerifyOptions{}); (err == nil) != tt.verify {
				t.Errorf("Verify before reopening = %v, want ok %v", err, tt.verify)
			}
			start := reopenStart(t, dir)
			for k, v := range tt.meta {
				if start.Meta[k] != v {
					t.Errorf("audit.start meta = %v, want %v", start.Meta, tt.meta)
					break
				}
			}
			if len(start.Meta) != len(tt.meta) {
				t.Errorf("audit.start meta = %v, want %v", start.Meta, tt.meta)
			}
			if res := mustVerify(t, dir, VerifyOptions{}); res.Entries != tt.entries {
				t.Errorf("Verify after reopening: %d entries, want %d", res.Entries, tt.entries)
			}
		})
	}
}

// TestRecoveryHashesOfFullSegments: damaged stored hashes of a full
// segment (fsynced, so not a crash) fail Verify; the remedy it prints,
// deleting the file, makes Open rebuild it from the entries.
func TestRecoveryHashesOfFullSegments(t *testing.T) {
	dir := smallLog(t, 9, 600)
	if segs, _ := listSegments(auditPath(dir)); len(segs) < 3 {
		t.Fatalf("%d segments, want 3 or more", len(segs))
	}
	b, _ := os.ReadFile(auditPath(dir, HashesFile))
	b[0] ^= 1
	os.WriteFile(auditPath(dir, HashesFile), b, 0o600)
	if res, err := Verify(dir, VerifyOptions{}); err == nil || *res.FirstBadIndex != 0 || !strings.Contains(res.Error, "delete the file") {
		t.Fatalf("Verify of a damaged hashes file = %+v", res)
	}
	os.Remove(auditPath(dir, HashesFile))
	l := openTest(t, dir, Config{SegmentSize: 600}, Options{})
	es, _ := l.Tail(1, nil)
	l.Close()
	if len(es) != 1 || es[0].Meta["repaired"] != "stored hashes" {
		t.Fatalf("audit.start after reopening = %+v, want repaired stored hashes", es)
	}
	mustVerify(t, dir, VerifyOptions{})
}

// TestRecoveryRefusesDamage: states a crash cannot produce make Open fail.
func TestRecoveryRefusesDamage(t *testing.T) {
	seg := func(dir string) string { return auditPath(dir, SegmentsDir, segmentName(0)) }
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"entries missing", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(seg(dir))
			os.WriteFile(seg(dir), b[:len(b)/2], 0o600)
		}},
		{"segments removed", func(t *testing.T, dir string) { os.Remove(seg(dir)) }},
		{"too many uncovered entries", func(t *testing.T, dir string) {
			e := appendFrame(nil, recEntry, []byte(`{"index":5,"time":"2026-11-25T12:00:01Z","event":"auth.login","outcome":"success"}`))
			appendFile(t, seg(dir), bytes.Repeat(e, MaxBatchLimit+1))
		}},
		{"entry changed", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(seg(dir))
			os.WriteFile(seg(dir), []byte(strings.Replace(string(b), "pi-1", "pi-7", 1)), 0o600)
			os.Truncate(auditPath(dir, HashesFile), 0)
		}},
		{"malformed checkpoint", func(t *testing.T, dir string) {
			appendFile(t, auditPath(dir, CheckpointsFile), []byte("hello\n\n"))
		}},
		{"replayed checkpoint", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(auditPath(dir, CheckpointsFile))
			recs, _, _ := splitCheckpoints(b)
			appendFile(t, auditPath(dir, CheckpointsFile), append(recs[1].msg, '\n'))
		}},
		{"bad signature", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(auditPath(dir, CheckpointsFile))
			b[len(b)-5] ^= 1
			os.WriteFile(auditPath(dir, CheckpointsFile), b, 0o600)
		}},
		{"stray file in segments", func(t *testing.T, dir string) {
			os.WriteFile(auditPath(dir, SegmentsDir, "notes.txt"), nil, 0o600)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := smallLog(t, 4, 0)
			tt.damage(t, dir)
			l, err := Open(dir, Config{}, Options{})
			if err == nil {
				l.Close()
				t.Fatal("Open succeeded on a damaged log")
			}
			if _, verr := Verify(dir, VerifyOptions{}); verr == nil {
				t.Errorf("Verify passed a log Open refused (%v)", err)
			}
		})
	}
}

func TestInitAndOpenGuards(t *testing.T) {
	dir := newTestDir(t)
	if err := Init(dir); !errors.Is(err, ErrExists) {
		t.Errorf("second Init = %v, want ErrExists", err)
	}
	for name, mode := range map[string]os.FileMode{SigningKeyFile: 0o600, HMACKeyFile: 0o600, "": 0o700 | os.ModeDir} {
		fi, err := os.Stat(auditPath(dir, name))
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v, %v; want %v", name, fi.Mode(), err, mode)
		}
	}
	l := openTest(t, dir, Config{}, Options{})
	if l2, err := Open(dir, Config{}, Options{}); !errors.Is(err, ErrLocked) {
		if l2 != nil {
			l2.Close()
		}
		t.Errorf("second Open = %v, want ErrLocked", err)
	}
	if err := l.Record(context.Background(), Event{Name: "bad", Outcome: OutcomeSuccess}); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Record(bad name) = %v, want ErrInvalidEvent", err)
	}
	if err := l.Record(context.Background(), Event{Name: "auth.login", Outcome: OutcomeSuccess, Meta: map[string]string{"password": "hunter2"}}); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Record(password in meta) = %v, want ErrInvalidEvent", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A cancelled context before submission: not recorded (or recorded and
	// acknowledged, if the queue took it first); never an error after the
	// entry is in.
	if i, err := l.Append(ctx, testEvent(1)); err == nil && i != l.Size()-1 {
		t.Errorf("Append with a cancelled context returned index %d", i)
	}
	l.Close()
	if err := l.Record(context.Background(), testEvent(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Record after Close = %v, want ErrClosed", err)
	}
	os.Chmod(auditPath(dir, SigningKeyFile), 0o644)
	if l, err := Open(dir, Config{}, Options{}); err == nil {
		l.Close()
		t.Error("Open accepted a signing key readable by others")
	}
	os.Chmod(auditPath(dir, SigningKeyFile), 0o600)
	if _, err := Open(t.TempDir(), Config{}, Options{}); err == nil {
		t.Error("Open succeeded without a log")
	}
	if _, err := Open(dir, Config{SegmentSize: -1}, Options{}); err == nil {
		t.Error("Open accepted a negative segment size")
	}
}

func TestSecretID(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{}, Options{})
	defer l.Close()
	a, b := l.SecretID([]byte("token-a")), l.SecretID([]byte("token-b"))
	if a == b || a != l.SecretID([]byte("token-a")) || !isSecretID(a) || strings.Contains(a, "token") {
		t.Errorf("SecretID: %q, %q", a, b)
	}
	if SecretID(l, []byte("token-a")) != a || SecretID(Discard{}, []byte("x")) != "" {
		t.Error("audit.SecretID does not use the recorder's key")
	}
	// Another log's key gives another identifier.
	other := t.TempDir()
	Init(other)
	ol := openTest(t, other, Config{}, Options{})
	defer ol.Close()
	if ol.SecretID([]byte("token-a")) == a {
		t.Error("two logs give the same SecretID")
	}
}

// TestVerifyWhileWriting: Verify and the Reader work on a log that is being
// appended to by another goroutine (another "process": Verify uses the
// files only).
func TestVerifyWhileWriting(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{SegmentSize: 4 << 10}, Options{})
	for i := range 10 {
		mustRecord(t, l, testEvent(i))
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				if err := l.Record(context.Background(), testEvent(g*100000+i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	r, err := NewReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	last := int64(0)
	for range 20 {
		// The checkpoints file (Latest) is updated after a batch is
		// durable, the segment (Verify) before: Latest never leads.
		c, msg, err := r.Latest()
		res := mustVerify(t, dir, VerifyOptions{})
		if res.Entries < last {
			t.Fatalf("Verify saw %d entries after %d", res.Entries, last)
		}
		if err != nil || c.Size > res.Entries || msg == nil {
			t.Fatalf("Latest = %d, %v; Verify saw %d, then %d", c.Size, err, last, res.Entries)
		}
		last = res.Entries
		es, _, err := r.Tail(3, func(e Entry) bool { return e.Principal == "device:pi-1" })
		if err != nil || len(es) == 0 {
			t.Fatalf("Tail while writing = %d entries, %v", len(es), err)
		}
	}
	stop.Store(true)
	wg.Wait()
	l.Close()
	if res := mustVerify(t, dir, VerifyOptions{}); res.Pending != 0 || res.Entries < last {
		t.Fatalf("final Verify = %+v", res)
	}
}

// tearLastCheckpoint cuts the last record of the checkpoints file in the
// middle, as a crash while appending it would.
func tearLastCheckpoint(t *testing.T, dir string) {
	t.Helper()
	p := auditPath(dir, CheckpointsFile)
	b, _ := os.ReadFile(p)
	recs, _, _ := splitCheckpoints(b)
	last := recs[len(recs)-1]
	if err := os.Truncate(p, last.end-int64(len(last.msg))/2); err != nil {
		t.Fatal(err)
	}
}
