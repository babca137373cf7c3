package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// smallLog makes a closed log of n+1 entries (audit.start first) in
// segments of segSize bytes; concurrent appends give batches of several
// entries as well as single ones.
func smallLog(t *testing.T, n int, segSize int64) string {
	t.Helper()
	dir := newTestDir(t)
	l := openTest(t, dir, Config{SegmentSize: segSize}, Options{})
	var wg sync.WaitGroup
	for i := range n {
		if i%3 == 0 {
			wg.Wait()
		}
		wg.Go(func() { mustRecord(t, l, testEvent(i)) })
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	mustVerify(t, dir, VerifyOptions{})
	return dir
}

// snapshot holds a log's files, to restore them between tamperings.
type snapshot map[string][]byte

func takeSnapshot(t *testing.T, dir string) snapshot {
	s := snapshot{}
	filepath.WalkDir(auditPath(dir), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			s[p] = b
		}
		return nil
	})
	return s
}

func (s snapshot) restore(t *testing.T, dir string) {
	os.RemoveAll(auditPath(dir, SegmentsDir))
	os.MkdirAll(auditPath(dir, SegmentsDir), 0o700)
	for p, b := range s {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// entryLines returns the lines (with newlines) of all segments, and for
// each the segment path it is in.
func entryLines(t *testing.T, dir string) (lines [][]byte, paths []string) {
	segs, err := listSegments(auditPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range segs {
		b, _ := os.ReadFile(s.path)
		for _, l := range bytes.SplitAfter(b, []byte("\n")) {
			if len(l) > 0 {
				lines = append(lines, l)
				paths = append(paths, s.path)
			}
		}
	}
	return lines, paths
}

func wantBad(t *testing.T, dir string, want int64, what string) {
	t.Helper()
	res, err := Verify(dir, VerifyOptions{})
	var ve *VerifyError
	if !errors.As(err, &ve) || res.OK {
		t.Fatalf("%s: Verify = %v, ok %v; want a failure", what, err, res.OK)
	}
	if want >= 0 && (res.FirstBadIndex == nil || *res.FirstBadIndex != want || ve.Index != want) {
		t.Fatalf("%s: %v; want first bad index %d", what, err, want)
	}
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

// TestTamperFlipEveryByte flips every byte of every segment and
// requires Verify to fail with the index of the entry holding that byte.
func TestTamperFlipEveryByte(t *testing.T) {
	dir := smallLog(t, 7, 600)
	snap := takeSnapshot(t, dir)
	lines, paths := entryLines(t, dir)
	if len(lines) != 8 {
		t.Fatalf("%d lines, want 8", len(lines))
	}
	if paths[0] == paths[len(paths)-1] {
		t.Fatal("want several segments")
	}
	for i, line := range lines {
		// Offset of the line in its segment.
		off := 0
		for j := 0; j < i; j++ {
			if paths[j] == paths[i] {
				off += len(lines[j])
			}
		}
		for k := range line {
			// Alternate a one-bit change and a whole-byte change.
			mask := byte(0x01)
			if k%2 == 1 {
				mask = 0xff
			}
			b := bytes.Clone(snap[paths[i]])
			b[off+k] ^= mask
			os.WriteFile(paths[i], b, 0o600)
			wantBad(t, dir, int64(i), "flip byte "+itoa(int64(k))+" of entry "+itoa(int64(i)))
		}
		snap.restore(t, dir)
	}
	mustVerify(t, dir, VerifyOptions{})
}

// TestTamperOtherFiles flips every byte of the checkpoints and hashes files.
func TestTamperOtherFiles(t *testing.T) {
	dir := smallLog(t, 4, 0)
	snap := takeSnapshot(t, dir)
	for _, name := range []string{CheckpointsFile, HashesFile} {
		p := auditPath(dir, name)
		for k := range snap[p] {
			b := bytes.Clone(snap[p])
			b[k] ^= 0x01
			os.WriteFile(p, b, 0o600)
			wantBad(t, dir, -1, name+" byte "+itoa(int64(k)))
		}
		snap.restore(t, dir)
	}
	mustVerify(t, dir, VerifyOptions{})
}

// TestTamperEntries swaps, drops, inserts and truncates entries.
func TestTamperEntries(t *testing.T) {
	dir := smallLog(t, 9, 0)
	snap := takeSnapshot(t, dir)
	seg := auditPath(dir, SegmentsDir, segmentName(0))
	lines := bytes.SplitAfter(snap[seg], []byte("\n"))
	lines = lines[:len(lines)-1]
	n := len(lines)
	join := func(ls ...[]byte) []byte { return bytes.Join(ls, nil) }
	without := func(i int) [][]byte {
		return append(append([][]byte{}, lines[:i]...), lines[i+1:]...)
	}
	for i := range n {
		// Drop entry i.
		os.WriteFile(seg, join(without(i)...), 0o600)
		wantBad(t, dir, int64(i), "drop "+itoa(int64(i)))
		// Swap i and i+1.
		if i+1 < n {
			ls := append([][]byte{}, lines...)
			ls[i], ls[i+1] = ls[i+1], ls[i]
			os.WriteFile(seg, join(ls...), 0o600)
			wantBad(t, dir, int64(i), "swap "+itoa(int64(i)))
		}
		// Insert a forged entry carrying index i before entry i.
		forged := bytes.Replace(lines[i], []byte(`"outcome":"`), []byte(`"outcome":"x`), 1)
		forged = bytes.Replace(forged, []byte(`"outcome":"xallow"`), []byte(`"outcome":"deny"`), 1)
		forged = bytes.Replace(forged, []byte(`"outcome":"xsuccess"`), []byte(`"outcome":"failure"`), 1)
		ls := append(append(append([][]byte{}, lines[:i]...), forged), lines[i:]...)
		os.WriteFile(seg, join(ls...), 0o600)
		wantBad(t, dir, int64(i), "insert before "+itoa(int64(i)))
		// Truncate at entry i, and in the middle of it.
		os.WriteFile(seg, join(lines[:i]...), 0o600)
		wantBad(t, dir, int64(i), "truncate at "+itoa(int64(i)))
		os.WriteFile(seg, append(join(lines[:i]...), lines[i][:len(lines[i])/2]...), 0o600)
		wantBad(t, dir, int64(i), "truncate inside "+itoa(int64(i)))
	}
	// Append a well-formed entry past the last checkpoint.
	extra := bytes.Replace(lines[n-1], []byte(`{"index":`+itoa(int64(n-1))), []byte(`{"index":`+itoa(int64(n))), 1)
	os.WriteFile(seg, join(append(append([][]byte{}, lines...), extra)...), 0o600)
	wantBad(t, dir, int64(n), "append past the last checkpoint")
	snap.restore(t, dir)

	// Drop a whole segment of a rotated log.
	dir2 := smallLog(t, 9, 300)
	segs, _ := listSegments(auditPath(dir2))
	if len(segs) < 3 {
		t.Fatalf("%d segments, want 3 or more", len(segs))
	}
	os.Remove(segs[1].path)
	wantBad(t, dir2, segs[1].start, "remove segment 1")
}

// TestSavedCheckpoint: a checkpoint saved earlier detects a rewrite of the
// whole log, checkpoints included, and a truncation.
func TestSavedCheckpoint(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{}, Options{})
	for i := range 5 {
		mustRecord(t, l, testEvent(i))
	}
	_, saved := l.Checkpoint()
	for i := range 5 {
		mustRecord(t, l, testEvent(10+i))
	}
	l.Close()
	if res := mustVerify(t, dir, VerifyOptions{Checkpoint: saved}); res.Entries != 11 {
		t.Fatalf("Entries = %d, want 11", res.Entries)
	}
	snap := takeSnapshot(t, dir)

	// Rewrite history with the log's own key: drop entry 3, re-sign all.
	rewrite := func(keep func(i int) bool) {
		snap.restore(t, dir)
		lines, _ := entryLines(t, dir)
		os.RemoveAll(auditPath(dir, SegmentsDir))
		os.MkdirAll(auditPath(dir, SegmentsDir), 0o700)
		os.WriteFile(auditPath(dir, CheckpointsFile), nil, 0o600)
		os.WriteFile(auditPath(dir, HashesFile), nil, 0o600)
		os.WriteFile(auditPath(dir, SegmentsDir, segmentName(0)), nil, 0o600)
		l := openTest(t, dir, Config{}, Options{})
		for i, line := range lines[1:] {
			if !keep(i + 1) {
				continue
			}
			e, err := ParseEntry(line[:len(line)-1])
			if err != nil {
				t.Fatal(err)
			}
			mustRecord(t, l, e.Event)
		}
		l.Close()
		mustVerify(t, dir, VerifyOptions{}) // consistent in itself
	}
	rewrite(func(i int) bool { return i != 3 })
	wantBadSaved(t, dir, saved, -1)
	rewrite(func(i int) bool { return i < 3 })
	wantBadSaved(t, dir, saved, 3)

	// A checkpoint of another log, or a forged one, is refused.
	snap.restore(t, dir)
	other := smallLog(t, 1, 0)
	ol := openTest(t, other, Config{}, Options{})
	_, otherCP := ol.Checkpoint()
	ol.Close()
	wantBadSaved(t, dir, otherCP, -1)
	forged := bytes.Replace(saved, []byte("\n6\n"), []byte("\n5\n"), 1)
	wantBadSaved(t, dir, forged, -1)
}

func wantBadSaved(t *testing.T, dir string, saved []byte, want int64) {
	t.Helper()
	res, err := Verify(dir, VerifyOptions{Checkpoint: saved})
	if err == nil || res.OK {
		t.Fatalf("Verify with saved checkpoint = ok; want a failure")
	}
	if want >= 0 && (res.FirstBadIndex == nil || *res.FirstBadIndex != want) {
		t.Fatalf("Verify with saved checkpoint: %v; want first bad index %d", err, want)
	}
	if want < 0 && res.FirstBadIndex != nil {
		t.Fatalf("Verify with saved checkpoint: %v; want no index", err)
	}
}

// TestVerifierKeyOption: with an independent verifier key, a log re-keyed by
// an intruder (new log.key and log.pub) fails.
func TestVerifierKeyOption(t *testing.T) {
	dir := smallLog(t, 2, 0)
	l := openTest(t, dir, Config{}, Options{})
	vkey := l.VerifierKey()
	l.Close()
	mustVerify(t, dir, VerifyOptions{VerifierKey: vkey})
	other := t.TempDir()
	if err := Init(other); err != nil {
		t.Fatal(err)
	}
	ol := openTest(t, other, Config{}, Options{})
	okey := ol.VerifierKey()
	ol.Close()
	if res, err := Verify(dir, VerifyOptions{VerifierKey: okey}); err == nil || res.OK {
		t.Fatal("Verify accepted checkpoints with another log's key")
	}
}
