package audit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// This file is what a history kept outside the file log (the PostgreSQL
// one, internal/pgaudit) needs to write the same entries and the same
// checkpoints, so that one verifier reads both: the entry encoding, the
// signing key, a frontier to recompute the tree in constant memory, and an
// Exporter that writes such a history out as a file log `hearth audit
// verify` accepts.

// EncodeEvent validates e (ValidateEvent), gives it the time now when it
// has none, and returns the JSON object that follows the index in its entry
// line (EntryLine builds the line once the index is known). It is what
// Log.Append writes.
func EncodeEvent(e Event, now time.Time) ([]byte, error) {
	if err := ValidateEvent(e); err != nil {
		return nil, err
	}
	if e.Time.IsZero() {
		e.Time = now
	}
	e.Time = e.Time.UTC()
	ev, err := marshalEvent(e)
	if err != nil {
		return nil, err
	}
	if len(ev)+40 > MaxEntrySize {
		return nil, fmt.Errorf("%w: %s: entry longer than %d bytes", ErrInvalidEvent, e.Name, MaxEntrySize)
	}
	return ev, nil
}

// EntryLine appends to dst the entry line of index built from event (as
// EncodeEvent returns it): the bytes whose tlog.RecordHash is the entry's
// leaf. event must start with '{'.
func EntryLine(dst []byte, index int64, event []byte) []byte {
	return appendEntryLine(dst, index, event)
}

// ValidEventBody reports whether event has the shape EncodeEvent gives
// (one line, a JSON object starting with its time): a cheap check of bytes
// read back from elsewhere before they are hashed. ParseEntry of the line
// is the full check.
func ValidEventBody(event []byte) bool {
	const head = `{"time":"`
	if len(event) < len(head)+1 || string(event[:len(head)]) != head || event[len(event)-1] != '}' || len(event)+40 > MaxEntrySize {
		return false
	}
	for _, c := range event {
		if c == '\n' {
			return false
		}
	}
	return true
}

// Signer is a log's keys, loaded from a data dir: its checkpoint signing
// key and its SecretID key. Replicas that share one history are given the
// same keys.
type Signer struct{ k *keys }

// LoadSigner reads the keys of the log in <dir>/audit (created by Init).
func LoadSigner(dir string) (*Signer, error) {
	k, err := loadKeys(filepath.Join(dir, DirName))
	if err != nil {
		return nil, err
	}
	return &Signer{k}, nil
}

// Origin is the log's name (the first line of its checkpoints).
func (s *Signer) Origin() string { return s.k.signer.Name() }

// VerifierKey is the verifier key of the checkpoints, note format.
func (s *Signer) VerifierKey() string { return s.k.vkey }

// Verifier is the note verifier of the checkpoints.
func (s *Signer) Verifier() note.Verifier { return s.k.verifier }

// SignCheckpoint returns the signed note of the tree of size entries with
// root hash root, exactly as the file log signs its checkpoints.
func (s *Signer) SignCheckpoint(size int64, root tlog.Hash) ([]byte, error) {
	return signCheckpoint(Checkpoint{Origin: s.Origin(), Size: size, Hash: root}, s.k.signer)
}

// SecretID is Log.SecretID under these keys.
func (s *Signer) SecretID(secret []byte) string { return secretID(s.k.hmacKey, secret) }

// Frontier recomputes a Merkle tree in constant memory, one entry at a
// time (the hashes of its perfect subtrees, at most one per level).
type Frontier struct{ f frontier }

// NewFrontier returns the frontier of a tree of n entries whose stored
// hashes read gives (it reads at most one hash per level).
func NewFrontier(n int64, read tlog.HashReader) (*Frontier, error) {
	f := &Frontier{}
	f.f.n = n
	var idx []int64
	var lv []int
	for l := 0; l < 64; l++ {
		if n>>l&1 == 1 {
			idx, lv = append(idx, tlog.StoredHashIndex(l, n>>l-1)), append(lv, l)
		}
	}
	if len(idx) == 0 {
		return f, nil
	}
	hs, err := read.ReadHashes(idx)
	if err != nil {
		return nil, err
	}
	if len(hs) != len(idx) {
		return nil, errors.New("audit: frontier: short read of stored hashes")
	}
	for i, l := range lv {
		f.f.level[l] = hs[i]
	}
	return f, nil
}

// Size is the number of entries added.
func (f *Frontier) Size() int64 { return f.f.n }

// Add appends the entry whose line is line and appends its stored hashes
// (tlog.StoredHashes order, indexes from tlog.StoredHashCount(Size()))
// to dst.
func (f *Frontier) Add(dst []tlog.Hash, line []byte) []tlog.Hash {
	return f.f.appendAdd(dst, tlog.RecordHash(line))
}

// Root is the tree hash of the entries added.
func (f *Frontier) Root() (tlog.Hash, error) { return f.f.root() }

// ReadHashes reads the frontier's hashes (a tlog.HashReader for TreeHash
// and StoredHashes at Size()).
func (f *Frontier) ReadHashes(indexes []int64) ([]tlog.Hash, error) { return f.f.ReadHashes(indexes) }

// Exporter writes a history kept elsewhere as a file log in
// <dir>/audit: framed segments (each checkpoint's entries, then its
// record), the stored hashes and the checkpoints cache, and the verifier
// key; no signing key, so the copy can be verified and read, not extended.
// Entries and checkpoints are added in order; each checkpoint must be
// signed by the verifier key and be the tree of the entries before it.
// Memory is constant.
type Exporter struct {
	adir     string
	verifier note.Verifiers
	origin   string
	segSize  int64
	fr       frontier
	scratch  []tlog.Hash
	buf      []byte
	pending  int64 // entries since the last checkpoint
	seg      *os.File
	segw     *bufio.Writer
	segBytes int64
	hashes   *os.File
	hashw    *bufio.Writer
	cps      *os.File
	cpw      *bufio.Writer
	last     Checkpoint
	lastMsg  []byte
}

// NewExporter starts a file log in <dir>/audit (which must not exist or be
// empty) for the log of verifierKey.
func NewExporter(dir, verifierKey string) (*Exporter, error) {
	v, err := ParseVerifierKey(verifierKey)
	if err != nil {
		return nil, err
	}
	adir := filepath.Join(dir, DirName)
	if ents, err := os.ReadDir(adir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%w in %s", ErrExists, adir)
	}
	if err := os.MkdirAll(filepath.Join(adir, SegmentsDir), 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	x := &Exporter{adir: adir, verifier: note.VerifierList(v), origin: v.Name(), segSize: DefaultSegmentSize}
	if err := writeFileSync(filepath.Join(adir, VerifierKeyFile), []byte(verifierKey+"\n"), 0o644); err != nil {
		return nil, err
	}
	if x.hashes, err = os.OpenFile(filepath.Join(adir, HashesFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if x.cps, err = os.OpenFile(filepath.Join(adir, CheckpointsFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
		x.hashes.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	x.hashw, x.cpw = bufio.NewWriterSize(x.hashes, 1<<16), bufio.NewWriterSize(x.cps, 1<<12)
	return x, nil
}

// newSegment starts the segment of the next entry.
func (x *Exporter) newSegment() error {
	f, err := os.OpenFile(filepath.Join(x.adir, SegmentsDir, segmentName(x.fr.n)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	x.seg, x.segw, x.segBytes = f, bufio.NewWriterSize(f, 1<<16), 0
	return nil
}

func (x *Exporter) closeSegment() error {
	err := x.segw.Flush()
	if err == nil {
		err = x.seg.Sync()
	}
	if cerr := x.seg.Close(); err == nil {
		err = cerr
	}
	x.seg = nil
	if err != nil {
		return fmt.Errorf("audit: writing a segment: %w", err)
	}
	return nil
}

// Size is the number of entries written.
func (x *Exporter) Size() int64 { return x.fr.n }

// Entry appends the next entry, given as the event JSON EncodeEvent
// returns (its index is Size()).
func (x *Exporter) Entry(event []byte) error {
	if !ValidEventBody(event) {
		return fmt.Errorf("audit: export: entry %d is not an event encoding", x.fr.n)
	}
	if x.pending >= MaxBatchLimit {
		return fmt.Errorf("audit: export: more than %d entries before a checkpoint at entry %d", MaxBatchLimit, x.fr.n)
	}
	if x.seg == nil {
		if err := x.newSegment(); err != nil {
			return err
		}
	}
	x.buf, _ = beginFrame(x.buf[:0])
	x.buf = appendEntryLine(x.buf, x.fr.n, event)
	x.scratch = x.fr.appendAdd(x.scratch[:0], tlog.RecordHash(x.buf[frameHeader:]))
	x.buf = finishFrame(x.buf, 0, recEntry)
	if _, err := x.segw.Write(x.buf); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	x.segBytes += int64(len(x.buf))
	for _, h := range x.scratch {
		if _, err := x.hashw.Write(h[:]); err != nil {
			return fmt.Errorf("audit: export: %w", err)
		}
	}
	x.pending++
	return nil
}

// Checkpoint appends a signed checkpoint, which must cover exactly the
// entries written so far.
func (x *Exporter) Checkpoint(msg []byte) error {
	c, err := OpenCheckpoint(msg, x.verifier)
	if err != nil {
		return fmt.Errorf("audit: export: checkpoint after entry %d: %w", x.fr.n, err)
	}
	if c.Origin != x.origin || c.Legacy {
		return fmt.Errorf("audit: export: checkpoint of %q, not of %q", c.Origin, x.origin)
	}
	if c.Size != x.fr.n || x.pending == 0 {
		return fmt.Errorf("audit: export: checkpoint of size %d after %d entries (%d since the last checkpoint)", c.Size, x.fr.n, x.pending)
	}
	root, err := x.fr.root()
	if err != nil {
		return err
	}
	if root != c.Hash {
		return fmt.Errorf("audit: export: checkpoint of size %d has root %s, the entries give %s", c.Size, c.Hash, root)
	}
	if len(msg) > maxCheckpointRecord {
		return fmt.Errorf("audit: export: checkpoint of size %d is longer than %d bytes", c.Size, maxCheckpointRecord)
	}
	x.buf = appendFrame(x.buf[:0], recCheckpoint, msg)
	if _, err := x.segw.Write(x.buf); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	x.segBytes += int64(len(x.buf))
	if _, err := x.cpw.Write(append(append([]byte(nil), msg...), '\n')); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	x.pending, x.last, x.lastMsg = 0, c, msg
	if x.segBytes >= x.segSize {
		return x.closeSegment()
	}
	return nil
}

// Close finishes the copy, made durable; entries after the last checkpoint
// are an error (nothing is left past a checkpoint).
func (x *Exporter) Close() error {
	var errs []error
	if x.pending > 0 {
		errs = append(errs, fmt.Errorf("audit: export: %d entries after the last checkpoint", x.pending))
	}
	if x.seg != nil {
		errs = append(errs, x.closeSegment())
	}
	for _, p := range []struct {
		w *bufio.Writer
		f *os.File
	}{{x.hashw, x.hashes}, {x.cpw, x.cps}} {
		errs = append(errs, p.w.Flush(), p.f.Sync(), p.f.Close())
	}
	errs = append(errs, syncDir(filepath.Join(x.adir, SegmentsDir)), syncDir(x.adir))
	return errors.Join(errs...)
}

// ParseTilePath parses the path of a c2sp.org/tlog-tiles tile or entry
// bundle after the log's prefix ("tile/0/x001/234.p/5",
// "tile/entries/000"), strictly, as Log.Handler does.
func ParseTilePath(p string) (tlog.Tile, error) { return parseTilePath(p) }

// TileInTree reports whether tile t exists in a tree of size entries.
func TileInTree(t tlog.Tile, size int64) bool { return tileInTree(t, size) }
