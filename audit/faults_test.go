package audit

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hearth-home/hearth/internal/httpx"
)

// faultFS opens real files and fails chosen operations on them, as a full
// disk or a failing device does: a write stops halfway with ENOSPC, a sync
// returns EIO, an open returns ENOSPC.
type faultFS struct {
	mu    sync.Mutex
	fault string // "<file class> <op>": "segment write", "hashes sync", "open", …
	syncs atomic.Int64
}

func (fs *faultFS) set(f string) { fs.mu.Lock(); fs.fault = f; fs.mu.Unlock() }

func (fs *faultFS) failing(class, op string) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.fault == class+" "+op || fs.fault == "any "+op
}

func fileClass(name string) string {
	switch filepath.Base(name) {
	case HashesFile:
		return "hashes"
	case CheckpointsFile:
		return "checkpoint"
	}
	return "segment"
}

func (fs *faultFS) open(name string, flag int, perm os.FileMode) (File, error) {
	if fs.failing(fileClass(name), "open") {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: f, fs: fs, class: fileClass(name)}, nil
}

type faultFile struct {
	*os.File
	fs    *faultFS
	class string
}

func (f *faultFile) WriteAt(b []byte, off int64) (int, error) {
	if f.fs.failing(f.class, "write") {
		n, _ := f.File.WriteAt(b[:len(b)/2], off)
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.WriteAt(b, off)
}

func (f *faultFile) Sync() error {
	f.fs.syncs.Add(1)
	if f.fs.failing(f.class, "sync") {
		return &os.PathError{Op: "fsync", Path: f.Name(), Err: syscall.EIO}
	}
	return f.File.Sync()
}

// Datasync is Sync for datasync: counted, failing like Sync, and
// fdatasync(2) underneath, as the log's own files do.
func (f *faultFile) Datasync() error {
	f.fs.syncs.Add(1)
	if f.fs.failing(f.class, "sync") {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: syscall.EIO}
	}
	return fdatasync(f.File)
}

func (f *faultFile) Truncate(n int64) error {
	if f.fs.failing(f.class, "truncate") {
		return &os.PathError{Op: "truncate", Path: f.Name(), Err: syscall.EIO}
	}
	return f.File.Truncate(n)
}

// TestFailClosed injects each write failure: Record fails, nothing is
// acknowledged or published, the failure persists while the fault does,
// and once it clears the log goes on from where it was and verifies.
func TestFailClosed(t *testing.T) {
	for _, fault := range []string{
		"segment write", "segment sync", "hashes write", "hashes sync",
		"segment open",
	} {
		t.Run(fault, func(t *testing.T) {
			dir := newTestDir(t)
			fs := &faultFS{}
			l := openTest(t, dir, Config{SegmentSize: 400}, Options{OpenFile: fs.open})
			for i := range 3 {
				mustRecord(t, l, testEvent(i))
			}
			size := l.Size()
			cp, msg := l.Checkpoint()

			fs.set(fault)
			// "segment open" fails only when a segment is rotated: fill the
			// current one first.
			for range 3 {
				var wg sync.WaitGroup
				var errs atomic.Int64
				for i := range 4 {
					wg.Go(func() {
						err := l.Record(context.Background(), testEvent(100+i))
						if err != nil {
							errs.Add(1)
							if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EIO) {
								t.Errorf("Record error %v does not wrap the cause", err)
							}
						}
					})
				}
				wg.Wait()
				if fault == "segment open" && errs.Load() == 0 {
					size = l.Size()
					cp, msg = l.Checkpoint()
					continue
				}
				if errs.Load() != 4 {
					t.Fatalf("with %s failing, %d of 4 Records failed", fault, errs.Load())
				}
				if l.Size() != size {
					t.Fatalf("Size() = %d after failed batches, want %d", l.Size(), size)
				}
				if c, m := l.Checkpoint(); c != cp || !bytes.Equal(m, msg) {
					t.Fatal("checkpoint advanced after a failed batch")
				}
				if l.Err() == nil {
					t.Fatal("Err() = nil while writes fail")
				}
			}

			fs.set("")
			i := mustRecord(t, l, testEvent(7))
			if i != size {
				t.Fatalf("first entry after the fault has index %d, want %d", i, size)
			}
			if l.Err() != nil {
				t.Fatalf("Err() = %v after a good batch", l.Err())
			}
			mustRecord(t, l, testEvent(8))
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			res := mustVerify(t, dir, VerifyOptions{})
			if res.Entries != size+2 {
				t.Fatalf("Verify: %d entries, want %d", res.Entries, size+2)
			}
			// The log reopens cleanly: no repair needed.
			l = openTest(t, dir, Config{SegmentSize: 400}, Options{})
			es, _ := l.Read(size+2, 1)
			l.Close()
			if len(es) != 1 || es[0].Meta["repaired"] != "" || es[0].Meta["discarded"] != "" {
				t.Fatalf("reopen after recovered faults: %+v", es)
			}
		})
	}
}

// TestCheckpointCacheFails: the checkpoints file is a cache written after
// a batch is durable; failing to write it fails no Record, and the next
// Open brings it up to date from the segments.
func TestCheckpointCacheFails(t *testing.T) {
	dir := newTestDir(t)
	fs := &faultFS{}
	l := openTest(t, dir, Config{}, Options{OpenFile: fs.open})
	mustRecord(t, l, testEvent(1))
	fs.set("checkpoint write")
	for i := range 3 {
		mustRecord(t, l, testEvent(2+i))
	}
	fs.set("")
	l.Close()
	r, err := NewReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := r.Latest(); c.Size != 2 {
		t.Fatalf("Latest with a stale cache = %d, want 2", c.Size)
	}
	if res := mustVerify(t, dir, VerifyOptions{}); res.Entries != 5 {
		t.Fatalf("Verify: %d entries, want 5", res.Entries)
	}
	l = openTest(t, dir, Config{}, Options{})
	l.Close()
	if c, _, _ := r.Latest(); c.Size != 6 {
		t.Fatalf("Latest after reopening = %d, want 6", c.Size)
	}
}

// TestFailClosedTruncateFails: when even cutting the failed tail fails,
// Record keeps failing; once it works, the log is whole.
func TestFailClosedTruncateFails(t *testing.T) {
	dir := newTestDir(t)
	fs := &faultFS{}
	l := openTest(t, dir, Config{}, Options{OpenFile: fs.open})
	fs.set("segment write")
	if l.Record(context.Background(), testEvent(1)) == nil {
		t.Fatal("Record succeeded with a failing write")
	}
	fs.set("segment truncate")
	if l.Record(context.Background(), testEvent(2)) == nil {
		t.Fatal("Record succeeded with a failing truncate")
	}
	fs.set("")
	mustRecord(t, l, testEvent(3))
	l.Close()
	if res := mustVerify(t, dir, VerifyOptions{}); res.Entries != 2 {
		t.Fatalf("Verify: %d entries, want 2", res.Entries)
	}
}

// gatedAgent is the fail-closed pattern every caller follows: record the
// decision, and only if that worked, let the request through to the agent.
func gatedAgent(l *Log, agentCalls *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev := Event{Name: EventAuthzDecision, Outcome: OutcomeAllow, Principal: "device:pi", Resource: r.URL.Path, Client: r.RemoteAddr,
			Reason: strings.Repeat("padding so that entries fill pages quickly ", 20)}
		if err := l.Record(r.Context(), ev); err != nil {
			httpx.Unavailable(w)
			return
		}
		agentCalls.Add(1)
		w.WriteHeader(http.StatusOK)
	})
}

func statusOf(t *testing.T, srv *httptest.Server, path string) int {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestFailClosedInjectedHTTP runs the 503 scenario with an injected ENOSPC;
// TestFailClosedFullDisk (Linux) runs it on a real full file system.
func TestFailClosedInjectedHTTP(t *testing.T) {
	dir := newTestDir(t)
	fs := &faultFS{}
	l := openTest(t, dir, Config{}, Options{OpenFile: fs.open})
	defer l.Close()
	fullDiskScenario(t, dir, l, func() { fs.set("any write") }, func() { fs.set("") })
}

// fullDiskScenario: requests pass while the log can be written; once the
// disk is full they get 503 and the agent sees none of them; once space is
// freed they pass again, and the log verifies with exactly the entries of
// the requests that passed.
func fullDiskScenario(t *testing.T, dir string, l *Log, fill, free func()) {
	var agent atomic.Int64
	srv := httptest.NewServer(gatedAgent(l, &agent))
	defer srv.Close()
	if c := statusOf(t, srv, "/before"); c != 200 {
		t.Fatalf("before the disk is full: %d", c)
	}
	fill()
	// The last pages of the log's files may still have room for a few
	// entries; after that, every request is refused.
	refused, passed := 0, 0
	for i := 0; i < 2000 && refused < 5; i++ {
		before, calls := l.Size(), agent.Load()
		switch c := statusOf(t, srv, "/full"); c {
		case 200:
			passed++
			if refused > 0 {
				t.Fatal("a request passed after one was refused, with the disk still full")
			}
		case 503:
			refused++
			if l.Size() != before || agent.Load() != calls {
				t.Fatal("a refused request reached the agent or the log")
			}
		default:
			t.Fatalf("status %d", c)
		}
	}
	if refused < 5 {
		t.Fatal("the disk never filled up")
	}
	t.Logf("disk full: %d requests passed into the files' last pages, then %d refused (%v)", passed, refused, l.Err())
	if l.Err() == nil {
		t.Error("Err() = nil with a full disk")
	}
	free()
	if c := statusOf(t, srv, "/after"); c != 200 {
		t.Fatalf("after freeing space: %d", c)
	}
	if got, want := l.Size(), agent.Load()+1; got != want {
		t.Fatalf("log has %d entries, want %d (audit.start and one per request the agent saw)", got, want)
	}
	res, err := Verify(dir, VerifyOptions{})
	if err != nil || res.Entries != l.Size() {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
}
