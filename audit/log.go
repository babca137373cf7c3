package audit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/tlog"
)

// Options are a Log's run-time dependencies. The zero value is the default.
type Options struct {
	// Logger gets operational messages (recovery, write failures). The
	// zero value discards them.
	Logger zerolog.Logger
	// Now is the clock for entries recorded without a time. Default
	// time.Now.
	Now func() time.Time
	// OpenFile opens the files the log writes (segments, hashes,
	// checkpoints). Default os.OpenFile. Tests wrap it to inject faults.
	OpenFile func(name string, flag int, perm os.FileMode) (File, error)
	// MaxBatch bounds how many entries one group commit writes. Default
	// and maximum MaxBatchLimit.
	MaxBatch int
	// HTTPClient pushes checkpoints to the witnesses. Default a client
	// with a 10-second timeout.
	HTTPClient *http.Client
	// WitnessInterval is the least time between two pushes to a witness.
	// Default one second.
	WitnessInterval time.Duration
	// CacheLimit overrides DefaultCacheLimit (tests).
	CacheLimit int64
	// OnBatch, if set, is called by the writer after each batch (written
	// or failed) with its figures: a hook for metrics. It must not block.
	OnBatch func(BatchStats)
}

// BatchStats describes one group commit, for metrics.
type BatchStats struct {
	Entries int           // entries in the batch
	Bytes   int           // bytes appended to the segment
	Write   time.Duration // write and fdatasync
	Err     error         // nil if the batch is durable
}

// MaxBatchLimit is the largest batch a Log writes. After a crash, at most
// this many complete entries can lie beyond the last checkpoint; Open
// refuses a log with more, since a crash cannot explain them.
const MaxBatchLimit = 1024

// Errors a Log returns.
var (
	ErrClosed = errors.New("audit: log is closed")
	ErrLocked = errors.New("audit: the log is open in another process")
)

// Log is the append-only audit log of a data dir. It is safe for
// concurrent use. See the package documentation for its files and its
// guarantees.
type Log struct {
	adir     string
	segSize  int64
	log      zerolog.Logger
	now      func() time.Time
	openFile func(name string, flag int, perm os.FileMode) (File, error)
	maxBatch int
	keys     *keys
	origin   string
	lock     *os.File

	sendMu sync.RWMutex
	closed bool
	reqs   chan *request
	done   chan struct{}

	// Owned by the writer goroutine (and by Open before it starts).
	seg        File
	segStart   int64
	segBytes   int64
	hashes     File
	hs         *hashStore
	cps        File
	cpBytes    int64
	cacheKeep  int64 // the checkpoints file's legacy records end here
	cacheLimit int64
	wsize      int64
	broken     bool  // a write failed: truncate the tails before the next one
	allocEnd   int64 // the segment is zero-filled up to here
	noPrealloc bool  // preallocation failed in this segment
	lineBuf    []byte
	hashBuf    []byte
	cpBuf      []byte

	bundles bundleIndex    // where entry tiles start, for serving them
	wpush   *WitnessPusher // nil without witnesses
	wstop   chan struct{}
	wdone   chan struct{}
	onBatch func(BatchStats)

	mu      sync.RWMutex // guards what readers see
	size    int64
	cp      Checkpoint
	cpMsg   []byte
	lastErr error
}

type request struct {
	event []byte // the event's JSON (appendEvent), in buf
	buf   []byte
	index int64
	done  chan error
}

var _ Recorder = (*Log)(nil)

// Open opens the log in <dir>/audit (created by Init), recovers it after a
// crash, and records an audit.start entry. Only one process may have a log
// open (ErrLocked).
//
// Recovery finds the last intact checkpoint record of the last segment and
// cuts the segment after it: records written after it (entries, a torn
// record) were never acknowledged (a Record returns only after the
// fdatasync of the batch holding its entry and checkpoint), so they are
// discarded, not re-signed — re-signing would put into the signed history
// entries whose requests were refused; the stored hashes are cut back or
// rebuilt from the entries, and the checkpoints cache brought up to date.
// A log of legacy segments is recovered as before and goes on in a framed
// segment from the next index. A state that a crash cannot produce (a
// checkpoint record that does not cover the entries before it, more than
// MaxBatchLimit uncovered entries, entries that do not match the last
// checkpoint, a cached checkpoint beyond the segments' last one) is
// refused: run `hearth audit verify`.
func Open(dir string, cfg Config, opts Options) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	adir := filepath.Join(dir, DirName)
	if _, err := os.Stat(filepath.Join(adir, SigningKeyFile)); err != nil {
		return nil, fmt.Errorf("audit: no log in %s (run hearth init): %w", adir, err)
	}
	l := &Log{
		adir:       adir,
		segSize:    cfg.segmentSize(),
		log:        opts.Logger,
		now:        opts.Now,
		openFile:   opts.OpenFile,
		maxBatch:   opts.MaxBatch,
		cacheLimit: opts.CacheLimit,
		reqs:       make(chan *request, MaxBatchLimit),
		done:       make(chan struct{}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.openFile == nil {
		l.openFile = osOpenFile
	}
	if l.maxBatch <= 0 || l.maxBatch > MaxBatchLimit {
		l.maxBatch = MaxBatchLimit
	}
	k, err := loadKeys(adir)
	if err != nil {
		return nil, err
	}
	l.keys, l.origin = k, k.signer.Name()
	if l.lock, err = lockLog(filepath.Join(adir, LockFile)); err != nil {
		return nil, err
	}
	st, err := recoverLog(adir, k, l.log)
	if err != nil {
		l.lock.Close()
		return nil, err
	}
	if err := l.openFiles(st); err != nil {
		l.closeFiles()
		l.lock.Close()
		return nil, err
	}
	l.onBatch = opts.OnBatch
	go l.run()
	if len(cfg.Witnesses) > 0 {
		if l.wpush, err = NewWitnessPusher(adir, cfg.Witnesses, opts.HTTPClient, k.verifier, l, l.log); err != nil {
			l.Close()
			return nil, err
		}
		interval := opts.WitnessInterval
		if interval <= 0 {
			interval = time.Second
		}
		l.wstop, l.wdone = make(chan struct{}), make(chan struct{})
		go l.runWitnesses(interval)
	}
	meta := map[string]string{"entries": fmt.Sprint(st.size)}
	if st.discarded > 0 {
		meta["discarded"] = fmt.Sprint(st.discarded)
	}
	if st.repaired != "" {
		meta["repaired"] = st.repaired
	}
	if err := l.Record(context.Background(), Event{Name: EventAuditStart, Outcome: OutcomeSuccess, Principal: "hearth", Meta: meta}); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Log) openFiles(st *recovered) error {
	var err error
	if l.seg, err = l.openFile(filepath.Join(l.adir, SegmentsDir, segmentName(st.segStart)), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if l.hashes, err = l.openFile(filepath.Join(l.adir, HashesFile), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if l.cps, err = l.openFile(filepath.Join(l.adir, CheckpointsFile), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	l.segStart, l.segBytes = st.segStart, st.segBytes
	if l.hs, err = newHashStore(l.hashes, st.size); err != nil {
		return err
	}
	l.cpBytes, l.cacheKeep = st.cpBytes, st.legacyEnd
	if l.cacheLimit <= 0 {
		l.cacheLimit = DefaultCacheLimit
	}
	l.wsize = st.size
	l.size, l.cp, l.cpMsg = st.size, st.cp, st.cpMsg
	return nil
}

func (l *Log) closeFiles() error {
	var errs []error
	for _, f := range []File{l.seg, l.hashes, l.cps} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// Close waits for the entries already submitted to be written, then closes
// the log. Record after Close returns ErrClosed.
func (l *Log) Close() error {
	l.sendMu.Lock()
	if l.closed {
		l.sendMu.Unlock()
		return nil
	}
	l.closed = true
	close(l.reqs)
	l.sendMu.Unlock()
	if l.wstop != nil {
		close(l.wstop)
		<-l.wdone
	}
	<-l.done
	var err error
	if !l.broken {
		// Leave the segment without its preallocated tail.
		err = errors.Join(l.hashes.Sync(), l.seg.Truncate(l.segBytes), l.seg.Sync())
	}
	if cerr := l.closeFiles(); err == nil {
		err = cerr
	}
	if cerr := l.lock.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: closing: %w", err)
	}
	return nil
}

// Record implements Recorder: it appends e and returns once the entry is
// durable and covered by a durable signed checkpoint. An error means the
// entry is not in the log (ErrInvalidEvent for an event refused as is; any
// other error is a write failure, and the caller must refuse its request:
// HTTP 503).
func (l *Log) Record(ctx context.Context, e Event) error {
	_, err := l.Append(ctx, e)
	return err
}

// Append is Record that also returns the entry's index.
func (l *Log) Append(ctx context.Context, e Event) (int64, error) {
	if err := ValidateEvent(e); err != nil {
		return -1, err
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC()
	if y := e.Time.Year(); y < 0 || y > 9999 {
		return -1, fmt.Errorf("%w: %s: time %v out of range", ErrInvalidEvent, e.Name, e.Time)
	}
	// The request, and the buffer its event is encoded into, are
	// recycled: no allocation per entry once the pool is warm.
	r := requests.Get().(*request)
	r.event = appendEvent(r.buf[:0], &e)
	r.buf = r.event
	if len(r.event)+40 > MaxEntrySize {
		putRequest(r)
		return -1, fmt.Errorf("%w: %s: entry longer than %d bytes", ErrInvalidEvent, e.Name, MaxEntrySize)
	}
	l.sendMu.RLock()
	if l.closed {
		l.sendMu.RUnlock()
		putRequest(r)
		return -1, ErrClosed
	}
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		l.sendMu.RUnlock()
		putRequest(r)
		return -1, fmt.Errorf("audit: %w", ctx.Err())
	}
	l.sendMu.RUnlock()
	// Once submitted, wait for the outcome whatever ctx says: an error
	// must mean that the entry is not in the log.
	err := <-r.done
	index := r.index
	// The writer is done with r once it has answered: it never touches an
	// answered request again.
	putRequest(r)
	if err != nil {
		return -1, err
	}
	return index, nil
}

// requests recycles requests and their answer channels: one fewer pair of
// allocations per entry.
var requests = sync.Pool{New: func() any { return &request{done: make(chan error, 1)} }}

func putRequest(r *request) {
	r.event, r.index = nil, 0
	if cap(r.buf) > 4<<10 {
		r.buf = nil // keep only ordinary sizes in the pool
	}
	requests.Put(r)
}

// run is the writer: it takes what is queued, up to maxBatch entries,
// commits it as one batch, and answers every request of the batch.
func (l *Log) run() {
	defer close(l.done)
	batch := make([]*request, 0, l.maxBatch)
	for {
		r, ok := <-l.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], r)
		batch = l.drain(batch)
		if len(batch) < l.maxBatch {
			// More are on their way (a batch was just answered): give them
			// a moment to queue, once. A lone entry waits too: under load,
			// the first writer back from the last batch would otherwise be
			// committed alone (a signature and an fdatasync, ~100 CPU-µs on
			// this machine kind, for one entry) while the rest queue behind
			// it. With nothing else to run, Gosched returns at once.
			runtime.Gosched()
			batch = l.drain(batch)
		}
		t0 := time.Now()
		err := l.commit(batch)
		if l.onBatch != nil {
			l.onBatch(BatchStats{Entries: len(batch), Bytes: len(l.lineBuf), Write: time.Since(t0), Err: err})
		}
		if err != nil {
			l.log.Error().Err(err).Int("entries", len(batch)).Msg("audit: batch not written; its requests are refused")
		}
		l.mu.Lock()
		if err == nil && l.lastErr != nil {
			l.log.Warn().Msg("audit: writing works again")
		}
		l.lastErr = err
		l.mu.Unlock()
		for _, r := range batch {
			r.done <- err
		}
		// The writers just answered are runnable on this P: let them run
		// and queue their next entries, so that they join the next batch
		// rather than wait a whole commit for the one after.
		runtime.Gosched()
	}
}

// drain adds to batch what is queued, up to maxBatch, without waiting.
func (l *Log) drain(batch []*request) []*request {
	for len(batch) < l.maxBatch {
		select {
		case r, ok := <-l.reqs:
			if !ok {
				return batch
			}
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// commit writes batch as one framed append to the segment: each entry's
// record, then the record of one signed checkpoint covering them; one
// fdatasync makes it durable, and the in-memory state advances only then.
func (l *Log) commit(batch []*request) error {
	if l.broken {
		if err := l.truncateTails(); err != nil {
			return err
		}
		l.broken = false
	}
	if err := l.rotate(); err != nil {
		return err
	}
	l.lineBuf = l.lineBuf[:0]
	for i, r := range batch {
		r.index = l.wsize + int64(i)
		var at int
		l.lineBuf, at = beginFrame(l.lineBuf)
		l.lineBuf = appendEntryLine(l.lineBuf, r.index, r.event)
		if err := l.hs.add(l.lineBuf[at+frameHeader:]); err != nil {
			l.hs.rollback()
			return err
		}
		l.lineBuf = finishFrame(l.lineBuf, at, recEntry)
	}
	size := l.wsize + int64(len(batch))
	root, err := tlog.TreeHash(size, l.hs)
	if err != nil {
		l.hs.rollback()
		return err
	}
	cp := Checkpoint{Origin: l.origin, Size: size, Hash: root}
	msg, err := signCheckpoint(cp, l.keys.signer)
	if err != nil {
		l.hs.rollback()
		return err
	}
	l.lineBuf = appendFrame(l.lineBuf, recCheckpoint, msg)
	l.hashBuf = l.hs.appendPending(l.hashBuf[:0])
	if err := l.write(); err != nil {
		l.hs.rollback()
		l.broken = true
		return err
	}
	l.hs.commit()
	l.segBytes += int64(len(l.lineBuf))
	l.wsize = size
	l.mu.Lock()
	l.size, l.cp, l.cpMsg = size, cp, msg
	l.mu.Unlock()
	l.writeCache(msg)
	return nil
}

// write makes the batch durable: the records in one write, then one
// fdatasync. The stored hashes are written first (so that a concurrent
// Verify or proof finds them) but fsynced only when a segment is full and
// at Close: they can be recomputed from the entries, and Open recomputes
// those of the last segment.
func (l *Log) write() error {
	l.preallocate(int64(len(l.lineBuf)))
	if _, err := l.hashes.WriteAt(l.hashBuf, l.hs.base*tlog.HashSize); err != nil {
		return fmt.Errorf("audit: writing stored hashes: %w", err)
	}
	if _, err := l.seg.WriteAt(l.lineBuf, l.segBytes); err != nil {
		return fmt.Errorf("audit: writing entries: %w", err)
	}
	if err := datasync(l.seg); err != nil {
		return fmt.Errorf("audit: syncing entries: %w", err)
	}
	return nil
}

// preallocChunk is how far ahead of the writer a segment is zero-filled.
const preallocChunk = 8 << 20

var zeros = make([]byte, 1<<20)

// preallocate zero-fills the segment ahead of the next n bytes, in chunks
// of preallocChunk (at most the segment size), so that appends overwrite
// allocated blocks and change no file size: fdatasync then flushes data
// alone, without a journal commit. The next fdatasync makes the zeros
// durable with the batch. It is an optimisation: where it fails (a full
// disk) the batch is appended as is.
func (l *Log) preallocate(n int64) {
	if l.noPrealloc || l.segBytes+n <= l.allocEnd {
		return
	}
	end := l.segBytes + n + min(preallocChunk, l.segSize)
	off := max(l.allocEnd, l.segBytes)
	for off < end {
		k := min(int64(len(zeros)), end-off)
		if _, err := l.seg.WriteAt(zeros[:k], off); err != nil {
			l.log.Warn().Err(err).Msg("audit: cannot preallocate the segment; appending without")
			l.noPrealloc = true
			if err := l.seg.Truncate(l.segBytes); err != nil {
				l.broken = true
			}
			l.allocEnd = l.segBytes
			return
		}
		off += k
	}
	l.allocEnd = end
}

// writeCache appends msg to the checkpoints file, the readers' cache of
// the latest checkpoint. It is not fsynced and cannot fail the batch,
// which is durable already: Open repairs the cache after a crash, and a
// failed write is overwritten by the next one.
func (l *Log) writeCache(msg []byte) {
	l.cpBuf = append(append(l.cpBuf[:0], msg...), '\n')
	if l.cpBytes+int64(len(l.cpBuf)) > l.cacheLimit && l.cpBytes > l.cacheKeep {
		if err := l.compactCache(); err != nil {
			l.log.Warn().Err(err).Msg("audit: cannot compact the checkpoints file")
		}
	}
	if _, err := l.cps.WriteAt(l.cpBuf, l.cpBytes); err != nil {
		l.log.Warn().Err(err).Msg("audit: cannot update the checkpoints file (readers see an older checkpoint)")
		return
	}
	l.cpBytes += int64(len(l.cpBuf))
}

// DefaultCacheLimit bounds the checkpoints cache: past it, the writer
// replaces the file with its legacy records (which legacy segments need)
// and the latest checkpoint. It keeps readers' and recovery's reads of it,
// and Verify's memory, bounded.
const DefaultCacheLimit = 4 << 20

// compactCache replaces the checkpoints file with its first cacheKeep
// bytes (the legacy records); the caller then appends the latest
// checkpoint. The new file is fsynced before it is renamed into place, so
// that a power cut leaves the old file or the whole new one.
func (l *Log) compactCache() error {
	path := filepath.Join(l.adir, CheckpointsFile)
	tmp := path + ".tmp"
	keep := make([]byte, l.cacheKeep)
	if _, err := l.cps.ReadAt(keep, 0); err != nil {
		return err
	}
	os.Remove(tmp)
	if err := writeFileSync(tmp, keep, 0o600); err != nil {
		return err
	}
	f, err := l.openFile(tmp, os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		f.Close()
		return err
	}
	if err := syncDir(l.adir); err != nil {
		l.log.Warn().Err(err).Msg("audit: syncing the audit directory")
	}
	l.cps.Close()
	l.cps, l.cpBytes = f, l.cacheKeep
	return nil
}

// truncateTails cuts what a failed batch may have left past the durable
// state, so the next batch starts from exactly where the last one ended.
func (l *Log) truncateTails() error {
	if err := l.seg.Truncate(l.segBytes); err != nil {
		return fmt.Errorf("audit: truncating a failed write: %w", err)
	}
	l.allocEnd = l.segBytes
	if err := l.hashes.Truncate(l.hs.base * tlog.HashSize); err != nil {
		return fmt.Errorf("audit: truncating a failed write: %w", err)
	}
	return nil
}

// rotate starts a new segment, named by the next index, once the current
// one has reached the configured size.
func (l *Log) rotate() error {
	if l.segBytes < l.segSize || l.segStart == l.wsize {
		return nil
	}
	// Open recomputes the stored hashes of the last segment only: those of
	// the full one must be durable before a new one starts. The full one
	// loses its preallocated tail, so that only the last segment has one.
	if err := l.hashes.Sync(); err != nil {
		return fmt.Errorf("audit: syncing stored hashes: %w", err)
	}
	if err := l.seg.Truncate(l.segBytes); err != nil {
		return fmt.Errorf("audit: closing a full segment: %w", err)
	}
	l.allocEnd = l.segBytes
	if err := l.seg.Sync(); err != nil {
		return fmt.Errorf("audit: closing a full segment: %w", err)
	}
	name := filepath.Join(l.adir, SegmentsDir, segmentName(l.wsize))
	f, err := l.openFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: starting a segment: %w", err)
	}
	// A previous attempt may have left the file; nothing in it is durable.
	if err := f.Truncate(0); err != nil {
		f.Close()
		return fmt.Errorf("audit: starting a segment: %w", err)
	}
	if err := syncDir(filepath.Join(l.adir, SegmentsDir)); err != nil {
		f.Close()
		return err
	}
	old := l.seg
	l.seg, l.segStart, l.segBytes, l.allocEnd, l.noPrealloc = f, l.wsize, 0, 0, false
	if err := old.Close(); err != nil {
		l.log.Warn().Err(err).Msg("audit: closing a full segment")
	}
	return nil
}

// Size returns the number of entries covered by the latest checkpoint.
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.size
}

// Checkpoint returns the latest checkpoint and its signed note.
func (l *Log) Checkpoint() (Checkpoint, []byte) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.cp, l.cpMsg
}

// Err returns the error of the last batch, or nil if it was written: a
// health check can report a log that cannot be written.
func (l *Log) Err() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.lastErr
}

// Origin returns the log's name, the first line after the header of its
// checkpoints and the name of its signing key.
func (l *Log) Origin() string { return l.origin }

// VerifierKey returns the verifier key of the log's checkpoints, in the
// note format; give it to whoever checks checkpoints independently.
func (l *Log) VerifierKey() string { return l.keys.vkey }

// SecretID returns an identifier of secret (a token, a session) that can be
// logged in its place: "hmac:" and the first 128 bits of HMAC-SHA256 under
// the log's own HMAC key, in hex. Equal secrets give equal identifiers; the
// identifier reveals nothing about a secret without the key, even a
// low-entropy one (RFC 2104; OWASP ASVS v4.0.3 7.1.1).
func (l *Log) SecretID(secret []byte) string { return secretID(l.keys.hmacKey, secret) }
