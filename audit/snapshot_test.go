package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// copySnapshot writes the files of s into a new data dir, as a backup
// restores them, and returns that dir.
func copySnapshot(t *testing.T, s *Snapshot) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, DirName, SegmentsDir), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range s.Files {
		var b bytes.Buffer
		if err := s.WriteFile(&b, f); err != nil {
			t.Fatalf("WriteFile(%s): %v", f.Name, err)
		}
		if int64(b.Len()) != f.Size() {
			t.Fatalf("WriteFile(%s) wrote %d bytes, Size() = %d", f.Name, b.Len(), f.Size())
		}
		p := filepath.Join(dir, DirName, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b.Bytes(), f.Mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// checkCopy copies s and verifies the copy: exactly the snapshot's
// checkpoint, nothing past it.
func checkCopy(t *testing.T, s *Snapshot) string {
	t.Helper()
	dir := copySnapshot(t, s)
	res, err := Verify(dir, VerifyOptions{})
	if err != nil {
		t.Fatalf("the copy of a snapshot at %d entries does not verify: %v (%+v)", s.Checkpoint.Size, err, res)
	}
	if res.Entries != s.Checkpoint.Size || res.Root != s.Checkpoint.Hash.String() || res.Unsigned != nil || res.Pending != 0 {
		t.Fatalf("the copy verifies as %+v, want exactly the snapshot's checkpoint (%d entries, root %s) and no tail", res, s.Checkpoint.Size, s.Checkpoint.Hash)
	}
	return dir
}

func snapshotFile(s *Snapshot, name string) (SnapshotFile, bool) {
	for _, f := range s.Files {
		if f.Name == name {
			return f, true
		}
	}
	return SnapshotFile{}, false
}

// Snapshots taken while four writers append, with segments rotating, are
// each a state the log was in: the copy verifies at the snapshot's
// checkpoint with no tail, holds every entry acknowledged before the
// snapshot, and opens without recovery. Both ways are exercised: the
// writer's own (Log.Snapshot) and from the files while the writer runs
// (TakeSnapshot, from the checkpoints cache).
func TestSnapshotWhileAppending(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{SegmentSize: 16 << 10}, Options{})
	t.Cleanup(func() { l.Close() })
	var acked atomic.Int64 // entries acknowledged (the largest index + 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	stopWriters := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	t.Cleanup(stopWriters) // before Close, also when the test fails
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				idx, err := l.Append(context.Background(), testEvent(w*1_000_000+i))
				if err != nil {
					t.Error(err)
					return
				}
				for n := acked.Load(); n < idx+1 && !acked.CompareAndSwap(n, idx+1); n = acked.Load() {
				}
			}
		})
	}
	var last *Snapshot
	maxSegs := 0
	for k := 0; k < 12; k++ {
		time.Sleep(20 * time.Millisecond)
		before := acked.Load()
		s, err := l.Snapshot()
		if err != nil {
			t.Fatalf("Log.Snapshot: %v", err)
		}
		if s.Checkpoint.Size < before {
			t.Fatalf("Log.Snapshot ends at %d entries, but %d were acknowledged before it", s.Checkpoint.Size, before)
		}
		checkCopy(t, s)
		before = acked.Load()
		fs, err := TakeSnapshot(dir)
		if err != nil {
			t.Fatalf("TakeSnapshot while the writer runs: %v", err)
		}
		if fs.Checkpoint.Size < before {
			t.Fatalf("TakeSnapshot ends at %d entries, but %d were acknowledged before it", fs.Checkpoint.Size, before)
		}
		checkCopy(t, fs)
		n := 0
		for _, f := range s.Files {
			if strings.HasPrefix(f.Name, SegmentsDir+"/") {
				n++
			}
		}
		maxSegs = max(maxSegs, n)
		last = s
	}
	stopWriters()
	if maxSegs < 2 {
		t.Errorf("the snapshots held at most %d segment, want several (rotation while copying)", maxSegs)
	}
	if _, ok := snapshotFile(last, LockFile); ok {
		t.Error("the snapshot holds the lock file")
	}
	for _, name := range []string{SigningKeyFile, VerifierKeyFile, HMACKeyFile} {
		if _, ok := snapshotFile(last, name); !ok {
			t.Errorf("the snapshot lacks %s", name)
		}
	}
	// The copy opens as it is: Open finds nothing to repair.
	cp := checkCopy(t, last)
	l2 := openTest(t, cp, Config{}, Options{})
	defer l2.Close()
	if got := l2.Size(); got != last.Checkpoint.Size+1 {
		t.Errorf("the opened copy has %d entries, want the snapshot's %d and audit.start", got, last.Checkpoint.Size)
	}
	es, err := l2.Tail(1, nil)
	if err != nil || len(es) != 1 || es[0].Meta["repaired"] != "" || es[0].Meta["discarded"] != "" {
		t.Errorf("the copy's audit.start = %+v, %v; want nothing repaired or discarded", es, err)
	}
}

// A log that a crash left with an unsigned tail (a batch whose fdatasync
// had not returned) is copied without it.
func TestSnapshotLeavesOutUnsignedTail(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{}, Options{})
	for i := range 5 {
		mustRecord(t, l, testEvent(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seg := auditPath(dir, SegmentsDir, segmentName(0))
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := appendFrame(nil, recEntry, appendEntryLine(nil, 6, []byte(`{"event":"authz.decision"}`)))
	f.Write(append(rec, recCheckpoint, 0, 1)) // and a torn record
	f.Close()
	if res, _ := Verify(dir, VerifyOptions{}); res.Unsigned == nil || res.Unsigned.Entries != 1 {
		t.Fatalf("the live log verifies as %+v, want an unsigned tail of one entry", res)
	}
	s, err := TakeSnapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Checkpoint.Size != 6 {
		t.Errorf("snapshot at %d entries, want 6 (audit.start and 5)", s.Checkpoint.Size)
	}
	fi, _ := os.Stat(seg)
	if f, ok := snapshotFile(s, SegmentsDir+"/"+segmentName(0)); !ok || f.Size() != fi.Size()-int64(len(rec))-3 {
		t.Errorf("segment in the snapshot: %+v, want it cut before the %d bytes of the tail", f, len(rec)+3)
	}
	checkCopy(t, s)
}

// A data dir made before the framed format: its legacy segment is cut
// after its last checkpoint's entries and its checkpoints file kept; once
// the log went on in framed segments, both kinds are copied.
func TestSnapshotLegacyDir(t *testing.T) {
	dir := legacyTestDir(t)
	cpBefore, err := os.ReadFile(auditPath(dir, CheckpointsFile))
	if err != nil {
		t.Fatal(err)
	}
	// A torn line past the last legacy checkpoint (a crash while writing).
	seg := auditPath(dir, SegmentsDir, legacySegmentName(0))
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"index":7,"event":"authz.dec`)
	f.Close()
	s, err := TakeSnapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Checkpoint.Size != 7 || !s.Checkpoint.Legacy {
		t.Errorf("snapshot of the legacy log: %+v, want its legacy checkpoint of 7 entries", s.Checkpoint)
	}
	if f, ok := snapshotFile(s, CheckpointsFile); !ok || f.Prefix != int64(len(cpBefore)) || f.Data != nil {
		t.Errorf("checkpoints in the snapshot: %+v, want the whole legacy file (%d bytes)", f, len(cpBefore))
	}
	fi, _ := os.Stat(seg)
	if f, ok := snapshotFile(s, SegmentsDir+"/"+legacySegmentName(0)); !ok || f.Size() >= fi.Size() {
		t.Errorf("legacy segment in the snapshot: %+v, want it cut before the torn line (file %d bytes)", f, fi.Size())
	}
	checkCopy(t, s)

	// The log goes on in framed segments.
	l := openTest(t, dir, Config{}, Options{})
	for i := range 3 {
		mustRecord(t, l, testEvent(i))
	}
	s, err = TakeSnapshot(dir) // the writer runs: from the cache
	if err != nil {
		t.Fatal(err)
	}
	if s.Checkpoint.Size != 11 || s.Checkpoint.Legacy {
		t.Errorf("snapshot of the upgraded log: %+v, want a checkpoint of 11 entries", s.Checkpoint)
	}
	cpf, _ := snapshotFile(s, CheckpointsFile)
	if cpf.Prefix != int64(len(cpBefore)) || !bytes.Equal(cpf.Data, append(bytes.Clone(s.Note), '\n')) {
		t.Errorf("checkpoints in the snapshot: prefix %d, data %q; want the %d bytes of legacy records and the latest note", cpf.Prefix, cpf.Data, len(cpBefore))
	}
	for _, name := range []string{legacySegmentName(0), segmentName(7)} {
		if _, ok := snapshotFile(s, SegmentsDir+"/"+name); !ok {
			t.Errorf("the snapshot lacks segment %s", name)
		}
	}
	checkCopy(t, s)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := TakeSnapshot(dir)
	if err != nil || s2.Checkpoint != s.Checkpoint {
		t.Fatalf("snapshot after Close: %+v, %v; want the same checkpoint %+v", s2, err, s.Checkpoint)
	}
	l2 := openTest(t, checkCopy(t, s2), Config{}, Options{})
	if got := l2.Size(); got != 12 {
		t.Errorf("the opened copy has %d entries, want 12", got)
	}
	l2.Close()
}

// A log with no checkpoint yet (Init, never opened) snapshots as empty;
// a checkpoints cache ahead of the segments is damage, not copied as if
// the log were whole.
func TestSnapshotEmptyAndDamaged(t *testing.T) {
	dir := newTestDir(t)
	s, err := TakeSnapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Checkpoint.Size != 0 || s.Note != nil {
		t.Errorf("snapshot of a new log: %+v", s.Checkpoint)
	}
	checkCopy(t, s)

	l := openTest(t, dir, Config{}, Options{})
	for i := range 3 {
		mustRecord(t, l, testEvent(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Cut the segment's last batch: the cache still holds its checkpoint.
	seg := auditPath(dir, SegmentsDir, segmentName(0))
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	fs := scanFramed(b[:len(b)-1], 0)
	if err := os.Truncate(seg, fs.cpEnd); err != nil {
		t.Fatal(err)
	}
	if _, err := TakeSnapshot(dir); err == nil || !strings.Contains(err.Error(), "hearth audit verify") {
		t.Errorf("TakeSnapshot of a log whose segments lost a cached checkpoint = %v, want damage", err)
	}
}
