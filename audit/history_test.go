package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// walk collects what WalkHistory passes.
func walk(t *testing.T, dir string) (lines [][]byte, cps []Checkpoint, res *VerifyResult) {
	t.Helper()
	res, err := WalkHistory(dir, VerifyOptions{}, func(i int64, line []byte) error {
		if i != int64(len(lines)) {
			t.Fatalf("entry %d passed after %d entries", i, len(lines))
		}
		lines = append(lines, bytes.Clone(line))
		return nil
	}, func(c Checkpoint, msg []byte) error {
		if c.Size != int64(len(lines)) {
			t.Fatalf("checkpoint of size %d passed after %d entries", c.Size, len(lines))
		}
		if !bytes.HasPrefix(msg, c.Text()) {
			t.Fatalf("checkpoint of size %d passed with a note of other text: %q", c.Size, msg)
		}
		cps = append(cps, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return lines, cps, res
}

// WalkHistory passes every entry the final checkpoint covers, as the
// reader reads them, and every framed checkpoint right after its last
// entry; an unsigned tail (a crash's unacknowledged batch) is left out.
func TestWalkHistoryLeavesOutUnsignedTail(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{}, Options{})
	for i := range 5 {
		mustRecord(t, l, testEvent(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(auditPath(dir, SegmentsDir, segmentName(0)), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(appendFrame(nil, recEntry, appendEntryLine(nil, 6, []byte(`{"event":"authz.decision"}`))))
	f.Close()
	lines, cps, res := walk(t, dir)
	if res.Unsigned == nil || res.Unsigned.Entries != 1 || int64(len(lines)) != res.Entries || res.Entries != 6 {
		t.Fatalf("walked %d entries, result %+v; want the 6 signed ones and an unsigned tail of 1", len(lines), res)
	}
	if len(cps) == 0 || cps[len(cps)-1].Size != 6 || cps[len(cps)-1].Hash.String() != res.Root {
		t.Fatalf("checkpoints %+v; want the last at 6 entries with root %s", cps, res.Root)
	}
	r, err := NewReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := r.Read(0, 6)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range ents {
		if b, _ := json.Marshal(e); !bytes.Equal(b, lines[i]) {
			t.Errorf("entry %d walked as %s, read as %s", i, lines[i], b)
		}
	}
}

// A log made before the framed format passes its entries but no
// checkpoint (its legacy checkpoints are not passed); once it went on in
// framed segments, the framed checkpoints cover everything.
func TestWalkHistoryLegacyDir(t *testing.T) {
	dir := legacyTestDir(t)
	lines, cps, res := walk(t, dir)
	if len(cps) != 0 || int64(len(lines)) != res.Entries || res.Entries == 0 {
		t.Fatalf("legacy log: %d entries, %d checkpoints passed, result %+v; want every entry and no checkpoint", len(lines), len(cps), res)
	}
	l := openTest(t, dir, Config{}, Options{})
	mustRecord(t, l, testEvent(1))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines, cps, res = walk(t, dir)
	if len(cps) == 0 || cps[len(cps)-1].Size != res.Entries || int64(len(lines)) != res.Entries {
		t.Fatalf("after a framed batch: %d entries, checkpoints %+v, result %+v", len(lines), cps, res)
	}
}
