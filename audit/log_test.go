package audit

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"sync"
	"testing"
)

func TestRecordVerifyReopen(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{SegmentSize: 2048}, Options{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				mustRecord(t, l, testEvent(g*100+i))
			}
		})
	}
	wg.Wait()
	if got, want := l.Size(), int64(201); got != want {
		t.Fatalf("Size() = %d, want %d", got, want)
	}
	es, err := l.Tail(5, nil)
	if err != nil || len(es) != 5 || es[4].Index != 200 {
		t.Fatalf("Tail(5) = %d entries (last %+v), %v", len(es), es, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	res := mustVerify(t, dir, VerifyOptions{Strict: true})
	if res.Entries != 201 {
		t.Errorf("Verify: Entries = %d, want 201", res.Entries)
	}
	segs, _ := listSegments(auditPath(dir))
	if len(segs) < 5 {
		t.Errorf("%d segments with SegmentSize 2048, want rotation", len(segs))
	}
	l = openTest(t, dir, Config{SegmentSize: 2048}, Options{})
	mustRecord(t, l, testEvent(1))
	if got := l.Size(); got != 203 {
		t.Errorf("after reopen Size() = %d, want 203 (audit.start + 1)", got)
	}
	es, err = l.Read(0, 1)
	if err != nil || len(es) != 1 || es[0].Name != EventAuditStart {
		t.Errorf("Read(0,1) = %+v, %v; want audit.start", es, err)
	}
	l.Close()
	mustVerify(t, dir, VerifyOptions{Strict: true})
}

// TestCloseWhileAppending: Close waits for submitted entries; every Append
// either succeeds (and its entry is in the log) or returns ErrClosed.
func TestCloseWhileAppending(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{}, Options{})
	var mu sync.Mutex
	acked := map[int64]bool{}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				idx, err := l.Append(t.Context(), testEvent(g*1000+i))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[idx] = true
				mu.Unlock()
			}
		})
	}
	for l.Size() < 50 {
		runtime.Gosched()
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	res := mustVerify(t, dir, VerifyOptions{})
	for i := range acked {
		if i >= res.Entries {
			t.Fatalf("acknowledged entry %d is not in the log of %d", i, res.Entries)
		}
	}
	if int64(len(acked))+1 != res.Entries {
		t.Fatalf("%d acknowledged entries, log has %d (audit.start included)", len(acked), res.Entries)
	}
}

// TestCheckpointCacheCompacted: past its limit the checkpoints cache is
// replaced by its legacy records and the latest checkpoint; readers,
// Verify and a reopened log work across the compactions.
func TestCheckpointCacheCompacted(t *testing.T) {
	dir := legacyTestDir(t)
	l := openTest(t, dir, Config{}, Options{CacheLimit: 4 << 10})
	r, err := NewReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		mustRecord(t, l, testEvent(i))
		if c, _, err := r.Latest(); err != nil || c.Size != l.Size() {
			t.Fatalf("Latest after %d = %d, %v; want %d", i, c.Size, err, l.Size())
		}
	}
	l.Close()
	fi, err := os.Stat(auditPath(dir, CheckpointsFile))
	if err != nil || fi.Size() > 8<<10 {
		t.Fatalf("checkpoints file: %v, %v", fi.Size(), err)
	}
	res := mustVerify(t, dir, VerifyOptions{})
	if res.Entries != 108 || res.Checkpoints != 7+101 {
		t.Fatalf("Verify: %d entries, %d checkpoints", res.Entries, res.Checkpoints)
	}
	l = openTest(t, dir, Config{}, Options{CacheLimit: 4 << 10})
	l.Close()
	mustVerify(t, dir, VerifyOptions{})
}

// TestReaderLatestLargeCache: Latest finds the last record of a
// checkpoints file longer than its first read window (16 KiB).
func TestReaderLatestLargeCache(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{}, Options{})
	for i := range 150 {
		mustRecord(t, l, testEvent(i))
	}
	defer l.Close()
	if fi, _ := os.Stat(auditPath(dir, CheckpointsFile)); fi.Size() < 32<<10 {
		t.Fatalf("checkpoints file is only %d bytes", fi.Size())
	}
	r, err := NewReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, msg, err := r.Latest()
	if want, wmsg := l.Checkpoint(); err != nil || c != want || !bytes.Equal(msg, wmsg) {
		t.Fatalf("Latest = %+v, %v; want %+v", c, err, want)
	}
}
