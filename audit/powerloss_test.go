package audit

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashFS models power loss: it mirrors every file the log writes and
// remembers what each file held at its last fsync. After crashAt
// operations it "loses power": every later operation fails, and the disk
// image is, per file, its synced content plus a random part of what was
// written (or truncated) since.
type crashFS struct {
	mu      sync.Mutex
	rng     *rand.Rand
	ops     int
	crashAt int
	crashed bool
	files   map[string]*crashFile
	image   map[string][]byte
	tails   int // images whose Verify named an unsigned tail
}

type crashFile struct {
	*os.File
	fs      *crashFS
	path    string
	cur     []byte // what the process sees
	durable []byte // what survives power loss for sure
}

func (fs *crashFS) open(name string, flag int, perm os.FileMode) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.step() {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EIO}
	}
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	b, _ := os.ReadFile(name)
	cf := &crashFile{File: f, fs: fs, path: name, cur: b, durable: bytes.Clone(b)}
	fs.files[name] = cf
	return cf, nil
}

// step counts an operation and reports whether the power is off.
func (fs *crashFS) step() bool {
	if fs.crashed {
		return true
	}
	fs.ops++
	if fs.ops < fs.crashAt {
		return false
	}
	fs.crashed = true
	fs.image = map[string][]byte{}
	for p, f := range fs.files {
		// What reached the disk since the last sync is any subset of the
		// 512-byte sectors written, and the file's length is the old or the
		// new one: a torn batch may have holes, and a later sector (say, a
		// checkpoint record) may survive an earlier one.
		n := len(f.durable)
		if fs.rng.IntN(2) == 0 {
			n = len(f.cur)
		}
		img := make([]byte, n)
		for s := 0; s < n; s += 512 {
			e := min(s+512, n)
			src := f.durable
			if fs.rng.IntN(2) == 0 {
				src = f.cur
			}
			if s < len(src) {
				copy(img[s:e], src[s:min(e, len(src))])
			}
		}
		fs.image[p] = bytes.Clone(img)
	}
	return true
}

func (f *crashFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.step() {
		return 0, &os.PathError{Op: "write", Path: f.path, Err: syscall.EIO}
	}
	if end := int(off) + len(b); end > len(f.cur) {
		f.cur = append(f.cur, make([]byte, end-len(f.cur))...)
	}
	copy(f.cur[off:], b)
	return f.File.WriteAt(b, off)
}

func (f *crashFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.step() {
		return &os.PathError{Op: "fsync", Path: f.path, Err: syscall.EIO}
	}
	f.durable = bytes.Clone(f.cur)
	return nil
}

func (f *crashFile) Truncate(n int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.step() {
		return &os.PathError{Op: "truncate", Path: f.path, Err: syscall.EIO}
	}
	if int(n) <= len(f.cur) {
		f.cur = f.cur[:n]
	} else {
		f.cur = append(f.cur, make([]byte, int(n)-len(f.cur))...)
	}
	return f.File.Truncate(n)
}

// TestPowerLoss cuts the power at every operation of a run of appends (with
// segment rotation and write failures), builds the disk image power loss
// could leave, and checks that the log opens, verifies, and holds every
// acknowledged entry.
func TestPowerLoss(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	const records = 12
	tails := 0
	for crashAt := 1; ; crashAt++ {
		dir := newTestDir(t)
		fs := &crashFS{rng: rng, crashAt: crashAt, files: map[string]*crashFile{}}
		l, err := Open(dir, Config{SegmentSize: 700}, Options{OpenFile: fs.open, Now: newTestClock().Now})
		if err != nil {
			// The power went off during Open: nothing was acknowledged.
			if !fs.crashed {
				t.Fatalf("crash at %d: Open: %v", crashAt, err)
			}
			checkImage(t, dir, fs, nil)
			continue
		}
		var acked []string
		for i := range records {
			e := testEvent(i)
			if l.Record(context.Background(), e) == nil {
				acked = append(acked, e.Meta["seq"])
			}
		}
		l.Close()
		if !fs.crashed {
			t.Logf("%d crash points, %d with an unsigned tail named by Verify before repair", crashAt-1, tails)
			return
		}
		checkImage(t, dir, fs, acked)
		tails += fs.tails
	}
}

// checkImage writes the crash image of fs over a copy of dir, opens and
// verifies it, and looks for every acknowledged seq.
func checkImage(t *testing.T, dir string, fs *crashFS, acked []string) {
	t.Helper()
	img := t.TempDir()
	src := auditPath(dir)
	filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := filepath.Join(img, DirName, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, ok := fs.image[p]
		if !ok {
			b, _ = os.ReadFile(p)
		}
		return os.WriteFile(dst, b, 0o600)
	})
	// Before any repair: the signed history verifies (the stored hashes
	// of the last segment, fsynced lazily, may not: Open recomputes them).
	if res, err := Verify(img, VerifyOptions{}); err != nil && !strings.Contains(err.Error(), "stored hashes") {
		t.Fatalf("crash after %d ops: Verify of the disk image before repair: %v", fs.crashAt, err)
	} else if err == nil && res.Unsigned != nil {
		fs.tails++
	}
	l, err := Open(img, Config{SegmentSize: 700}, Options{})
	if err != nil {
		t.Fatalf("crash after %d ops: Open of the disk image: %v", fs.crashAt, err)
	}
	es, err := l.Read(0, 1000)
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	mustVerify(t, img, VerifyOptions{Strict: true})
	have := map[string]bool{}
	for _, e := range es {
		have[e.Meta["seq"]] = true
	}
	for _, s := range acked {
		if !have[s] {
			t.Fatalf("crash after %d ops: acknowledged entry seq %s lost", fs.crashAt, s)
		}
	}
}
