package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
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

// segRecord is one record of a framed segment, header included.
type segRecord struct {
	path  string
	off   int
	typ   byte
	frame []byte
}

// segRecords returns the records of all segments, in order.
func segRecords(t *testing.T, dir string) []segRecord {
	segs, err := listSegments(auditPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	var out []segRecord
	for _, s := range segs {
		b, _ := os.ReadFile(s.path)
		for off := 0; ; {
			typ, _, n, err := parseFrame(b[off:])
			if err != nil {
				break
			}
			out = append(out, segRecord{s.path, off, typ, b[off : off+n]})
			off += n
		}
	}
	return out
}

// entryRecords returns the entry records only.
func entryRecords(t *testing.T, dir string) []segRecord {
	var out []segRecord
	for _, r := range segRecords(t, dir) {
		if r.typ == recEntry {
			out = append(out, r)
		}
	}
	return out
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
	recs := entryRecords(t, dir)
	if len(recs) != 8 {
		t.Fatalf("%d entries, want 8", len(recs))
	}
	if recs[0].path == recs[len(recs)-1].path {
		t.Fatal("want several segments")
	}
	for i, r := range recs {
		for k := range r.frame {
			// Alternate a one-bit change and a whole-byte change.
			mask := byte(0x01)
			if k%2 == 1 {
				mask = 0xff
			}
			b := bytes.Clone(snap[r.path])
			b[r.off+k] ^= mask
			os.WriteFile(r.path, b, 0o600)
			wantBad(t, dir, int64(i), "flip byte "+itoa(int64(k))+" of entry "+itoa(int64(i)))
		}
		snap.restore(t, dir)
	}
	// And every byte of the checkpoint records.
	for _, r := range segRecords(t, dir) {
		if r.typ != recCheckpoint {
			continue
		}
		for k := range r.frame {
			b := bytes.Clone(snap[r.path])
			b[r.off+k] ^= 0x01
			os.WriteFile(r.path, b, 0o600)
			wantBad(t, dir, -1, "flip byte "+itoa(int64(k))+" of a checkpoint record")
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
			if name == CheckpointsFile && k == len(snap[p])-1 {
				// The final newline changed reads as a torn record, as a
				// crash while appending the cache leaves it: Verify warns.
				continue
			}
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
	all := segRecords(t, dir)
	n := 0
	for _, r := range all {
		if r.typ == recEntry {
			n++
		}
	}
	// pos[i] is the position of entry i among all records.
	var pos []int
	for k, r := range all {
		if r.typ == recEntry {
			pos = append(pos, k)
		}
	}
	frames := func(rs []segRecord) []byte {
		var b []byte
		for _, r := range rs {
			b = append(b, r.frame...)
		}
		return b
	}
	payload := func(r segRecord) []byte { return r.frame[frameHeader:] }
	for i := range n {
		p := pos[i]
		// Drop entry i.
		os.WriteFile(seg, frames(slices.Delete(slices.Clone(all), p, p+1)), 0o600)
		wantBad(t, dir, int64(i), "drop "+itoa(int64(i)))
		// Swap i and i+1.
		if i+1 < n {
			rs := slices.Clone(all)
			rs[p], rs[pos[i+1]] = rs[pos[i+1]], rs[p]
			os.WriteFile(seg, frames(rs), 0o600)
			wantBad(t, dir, int64(i), "swap "+itoa(int64(i)))
		}
		// Insert a forged entry carrying index i before entry i.
		forged := bytes.Replace(payload(all[p]), []byte(`"outcome":"`), []byte(`"outcome":"x`), 1)
		forged = bytes.Replace(forged, []byte(`"outcome":"xallow"`), []byte(`"outcome":"deny"`), 1)
		forged = bytes.Replace(forged, []byte(`"outcome":"xsuccess"`), []byte(`"outcome":"failure"`), 1)
		rs := slices.Insert(slices.Clone(all), p, segRecord{typ: recEntry, frame: appendFrame(nil, recEntry, forged)})
		os.WriteFile(seg, frames(rs), 0o600)
		wantBad(t, dir, int64(i), "insert before "+itoa(int64(i)))
		// Truncate at entry i, and in the middle of it.
		os.WriteFile(seg, frames(all[:p]), 0o600)
		wantBad(t, dir, int64(i), "truncate at "+itoa(int64(i)))
		os.WriteFile(seg, append(frames(all[:p]), all[p].frame[:len(all[p].frame)/2]...), 0o600)
		wantBad(t, dir, int64(i), "truncate inside "+itoa(int64(i)))
	}
	// A well-formed entry past the last checkpoint is what a crash leaves
	// (a batch whose fdatasync did not return): the signed history
	// verifies, and the tail is named.
	last := payload(all[pos[n-1]])
	extra := bytes.Replace(last, []byte(`{"index":`+itoa(int64(n-1))), []byte(`{"index":`+itoa(int64(n))), 1)
	os.WriteFile(seg, append(frames(all), appendFrame(nil, recEntry, extra)...), 0o600)
	res := mustVerify(t, dir, VerifyOptions{})
	if res.Entries != int64(n) || res.Unsigned == nil || res.Unsigned.Entries != 1 || res.Unsigned.After != int64(n) {
		t.Fatalf("entry past the last checkpoint: %+v, tail %+v", res, res.Unsigned)
	}
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
		recs := entryRecords(t, dir)
		os.RemoveAll(auditPath(dir, SegmentsDir))
		os.MkdirAll(auditPath(dir, SegmentsDir), 0o700)
		os.WriteFile(auditPath(dir, CheckpointsFile), nil, 0o600)
		os.WriteFile(auditPath(dir, HashesFile), nil, 0o600)
		os.WriteFile(auditPath(dir, SegmentsDir, segmentName(0)), nil, 0o600)
		l := openTest(t, dir, Config{}, Options{})
		for i, r := range recs[1:] {
			if !keep(i + 1) {
				continue
			}
			e, err := ParseEntry(r.frame[frameHeader:])
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
