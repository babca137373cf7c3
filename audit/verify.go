package audit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// VerifyOptions tune Verify. The zero value checks the log against the
// verifier key in its own directory.
type VerifyOptions struct {
	// VerifierKey, if set, is the note verifier key (as printed by `hearth
	// init` or Log.VerifierKey) that every checkpoint must be signed with,
	// instead of the key in the audit directory, which an intruder who
	// rewrote the log could have replaced too.
	VerifierKey string
	// Checkpoint, if set, is a signed checkpoint saved earlier (`hearth
	// audit checkpoint`). Verify then also proves that the log still holds
	// the tree it describes: that nothing was truncated or rewritten since,
	// checkpoints included.
	Checkpoint []byte
	// Strict also parses every entry with ParseEntry (canonical JSON, valid
	// event), at several times the cost. Without it, Verify checks each
	// entry's index and its bytes against the signed tree, which is what
	// makes tampering evident; Strict adds a check of the format.
	Strict bool
	// Witnesses are the cosignature verifier keys (c2sp.org/tlog-cosignature,
	// <name>+<hash>+<key>) of witnesses whose cosigned checkpoints, kept in
	// the audit directory, the log must extend: each key needs at least one
	// valid cosignature on a checkpoint whose tree the log holds, so a
	// history the witness saw cannot have been rewritten or forked.
	Witnesses []string
}

// VerifyResult is what Verify found. Its JSON form is what `hearth audit
// verify --json` prints.
type VerifyResult struct {
	OK bool `json:"ok"`
	// Entries is the number of entries verified: those covered by the
	// final checkpoint (on failure, those that matched a checkpoint before
	// the failure).
	Entries int64 `json:"entries"`
	// Checkpoints is the number of signed checkpoints checked.
	Checkpoints int `json:"checkpoints"`
	// FirstBadIndex is the index of the first entry found changed,
	// removed, reordered, injected or missing; null when the failure is
	// not tied to one entry (or when OK).
	FirstBadIndex *int64 `json:"first_bad_index"`
	Error         string `json:"error"`
	// Pending counts entries past the final checkpoint, not verified:
	// a batch being written by the process that has the log open.
	Pending int64 `json:"pending,omitempty"`
	// Unsigned is what follows the final checkpoint when no process has
	// the log open: a batch a crash left unacknowledged, that the next
	// start discards. It does not fail verification.
	Unsigned *UnsignedTail `json:"unsigned,omitempty"`
	// Witnessed lists the cosigned checkpoints checked (VerifyOptions.Witnesses).
	Witnessed []WitnessedCheckpoint `json:"witnessed,omitempty"`
	Warnings  []string              `json:"warnings,omitempty"`
	Origin    string                `json:"origin,omitempty"`
	// Root is the final checkpoint's tree hash, base64.
	Root string `json:"root,omitempty"`
}

// VerifyError is the error Verify returns for a log that fails
// verification; Index is the first bad entry, or -1.
type VerifyError struct {
	Index int64
	Err   error
}

func (e *VerifyError) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("audit: verification failed at entry %d: %v", e.Index, e.Err)
	}
	return fmt.Sprintf("audit: verification failed: %v", e.Err)
}

func (e *VerifyError) Unwrap() error { return e.Err }

// Verify checks the log in <dir>/audit from its files alone, read only:
//
//   - every checkpoint's signature (with the key in the directory, or
//     opts.VerifierKey), its origin, and that sizes strictly increase;
//   - every entry: complete, carrying its own index, in segment files that
//     follow each other (and in canonical form, with opts.Strict);
//   - the Merkle tree recomputed from the entries: each checkpoint's hash
//     must be the tree hash at its size (which implies the consistency of
//     successive checkpoints), and the final checkpoint must cover every
//     entry;
//   - the stored hashes file against the recomputed tree;
//   - with opts.Checkpoint, that the log extends the saved checkpoint.
//
// It works while a process has the log open: it verifies up to the latest
// complete checkpoint and reports the batch being written as Pending. When
// no process has the log open, entries past the final checkpoint fail it
// (injected, or a crash tail that the next Open discards).
//
// Verify streams the entries with constant memory (the tree's frontier).
// The result is always non-nil; the error is a *VerifyError when the log
// fails verification.
func Verify(dir string, opts VerifyOptions) (*VerifyResult, error) {
	v := &verifier{adir: filepath.Join(dir, DirName), res: &VerifyResult{}, hashDiverged: -1, hashesEnd: -1}
	err := v.run(opts)
	if err != nil {
		// The entries that did match a signed checkpoint.
		v.res.Entries = v.prevSize
		var ve *VerifyError
		if !errors.As(err, &ve) {
			ve = &VerifyError{Index: -1, Err: err}
		}
		v.res.OK = false
		v.res.Error = ve.Err.Error()
		if ve.Index >= 0 {
			i := ve.Index
			v.res.FirstBadIndex = &i
		}
		return v.res, ve
	}
	v.res.OK = true
	return v.res, nil
}

type verifier struct {
	adir string
	res  *VerifyResult
	// The first entry whose stored hashes disagree with the recomputed
	// ones (-1: none yet), and the size of the last checkpoint verified.
	hashDiverged, prevSize int64
	// The first entry whose stored hashes the hashes file lacks (-1: none).
	hashesEnd int64
}

// badAt is the index to report for a failure found at entry i: an entry
// that breaks the format may follow a changed entry in the same checkpoint
// range that only the stored hashes point at (a changed newline merges two
// entries).
func (v *verifier) badAt(i int64) int64 {
	if v.hashDiverged >= v.prevSize && v.hashDiverged < i {
		return v.hashDiverged
	}
	return i
}

func bad(i int64, format string, args ...any) error {
	return &VerifyError{Index: i, Err: fmt.Errorf(format, args...)}
}

func (v *verifier) run(opts VerifyOptions) error {
	var nv note.Verifier
	var err error
	if opts.VerifierKey != "" {
		nv, err = ParseVerifierKey(opts.VerifierKey)
	} else {
		nv, err = LoadVerifier(filepath.Dir(v.adir))
	}
	if err != nil {
		return err
	}
	verifiers := note.VerifierList(nv)
	v.res.Origin = nv.Name()
	running := writerRunning(filepath.Join(v.adir, LockFile))

	// Checkpoints the log must hold the tree of: one saved earlier, and
	// those the witnesses cosigned.
	var anchors []anchor
	if opts.Checkpoint != nil {
		c, err := OpenCheckpoint(opts.Checkpoint, verifiers)
		if err != nil {
			return bad(-1, "saved checkpoint: %w", err)
		}
		if c.Origin != nv.Name() {
			return bad(-1, "saved checkpoint is of log %q, not %q", c.Origin, nv.Name())
		}
		anchors = append(anchors, anchor{cp: c, what: "the saved checkpoint"})
	}
	wa, err := witnessAnchors(v.adir, opts.Witnesses, verifiers, nv.Name())
	if err != nil {
		return err
	}
	anchors = append(anchors, wa...)
	v.res.Witnessed = make([]WitnessedCheckpoint, 0, len(wa))

	// The checkpoints file, read before the segments: its legacy records
	// are the signed history of the legacy segments, and its newest record
	// (a cache written after each batch is durable) is a checkpoint the
	// segments must reach.
	data, err := os.ReadFile(filepath.Join(v.adir, CheckpointsFile))
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if clean, at := cacheData(data); at >= 0 {
		v.res.Warnings = append(v.res.Warnings, fmt.Sprintf("the checkpoints file reads as zeros from offset %d (not yet written out when the power went off; opening the log repairs it)", at))
		data = clean
	}
	recs, torn, splitErr := splitCheckpoints(data)
	if torn >= 0 && !running {
		v.res.Warnings = append(v.res.Warnings, fmt.Sprintf("torn record at offset %d of the checkpoints file (a crash while appending; opening the log repairs it)", torn))
	}
	nLegacy := 0
	for nLegacy < len(recs) && bytes.HasPrefix(recs[nLegacy].msg, []byte(LegacyCheckpointHeader+"\n")) {
		nLegacy++
	}
	cps, cpErr := parseCheckpoints(recs[:nLegacy], nv.Name())
	if cpErr == nil {
		// The cache's records too must be this log's, in growing sizes.
		if _, err := parseCheckpoints(recs, nv.Name()); err != nil {
			cpErr = bad(-1, "checkpoints file: %v", err)
		}
	}
	if cpErr == nil && splitErr != nil {
		prev := int64(0)
		if len(cps) > 0 {
			prev = cps[len(cps)-1].Size
		}
		cpErr = bad(prev, "%v", splitErr)
	}
	// The cache's records, each of which must be a copy of the segments'
	// record of its size.
	type cacheRec struct {
		size int64
		msg  []byte
	}
	var cache []cacheRec
	for _, r := range recs[nLegacy:] {
		if c, err := ParseCheckpoint(noteText(r.msg)); err == nil {
			cache = append(cache, cacheRec{c.Size, r.msg})
		}
	}
	var cacheErr error
	// A torn cache record must be the start of the segments' next
	// checkpoint record (a crash tears the last append only).
	var tornRec []byte
	tornAfter := int64(-1)
	if torn >= 0 {
		tornRec = data[torn:]
		if len(cache) > 0 {
			tornAfter = cache[len(cache)-1].size
		} else if len(cps) > 0 {
			tornAfter = cps[len(cps)-1].Size
		}
	}
	var cached *Checkpoint
	if len(recs) > nLegacy {
		last := recs[len(recs)-1]
		if c, err := OpenCheckpoint(last.msg, verifiers); err == nil && !c.Legacy {
			cached = &c
		} else if cpErr == nil {
			cpErr = bad(-1, "the last record of the checkpoints file does not verify: %v", err)
		}
	}
	// Signatures are checked on the other CPUs while this one reads the
	// entries.
	sigDone := make(chan error, 1)
	go func() { sigDone <- checkSignatures(recs[:len(cps)], cps, verifiers) }()
	var sigErr error
	sigWaited := false
	waitSignatures := func() error {
		if !sigWaited {
			sigErr, sigWaited = <-sigDone, true
		}
		return sigErr
	}
	defer waitSignatures()
	framedSigs := newSigPool(verifiers)
	defer framedSigs.wait()

	// Then the entries, and the checkpoint records among them.
	var hashes *lineHashes
	if hf, err := os.Open(filepath.Join(v.adir, HashesFile)); err == nil {
		defer hf.Close()
		hashes = &lineHashes{r: bufio.NewReaderSize(hf, 1<<16)}
	} else {
		v.res.Warnings = append(v.res.Warnings, "no stored hashes file")
	}
	var fr frontier
	var scratch []tlog.Hash
	ci := 0
	final := Checkpoint{Origin: nv.Name(), Hash: emptyRoot()}
	finalIndex := -1
	atSize := func(n int64) error {
		for k := range anchors {
			if anchors[k].cp.Size == n {
				root, err := fr.root()
				if err != nil {
					return err
				}
				anchors[k].root = &root
			}
		}
		return nil
	}
	entry := func(i int64, line []byte) error {
		if !indexPrefix(line, i) {
			return bad(v.badAt(i), "entry %d does not carry index %d (removed, reordered or injected entries)", i, i)
		}
		if opts.Strict {
			if _, err := ParseEntry(line); err != nil {
				return bad(v.badAt(i), "entry %d: %v", i, err)
			}
		}
		scratch = fr.appendAdd(scratch[:0], tlog.RecordHash(line))
		hs := scratch
		if hashes != nil && v.hashDiverged < 0 {
			ok, err := hashes.match(hs)
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				// The tail of the hashes file is fsynced lazily; after a
				// crash it may be short, and Open recomputes it.
				v.hashesEnd = i
				hashes = nil
			case err != nil || !ok:
				v.hashDiverged = i
			}
		}
		n := i + 1
		if ci < len(cps) && cps[ci].Size == n {
			root, err := fr.root()
			if err != nil {
				return err
			}
			if root != cps[ci].Hash {
				return bad(v.badAt(n), "entries %d to %d do not match signed checkpoint %d (changed, removed, reordered or injected entries)", v.prevSize, n-1, ci)
			}
			v.prevSize = n
			final = cps[ci]
			ci++
		}
		return atSize(n)
	}
	checkpoint := func(n int64, msg []byte) error {
		k := len(cps) + framedSigs.count
		c, err := ParseCheckpoint(noteText(msg))
		switch {
		case err != nil:
			return bad(v.badAt(v.prevSize), "checkpoint %d: %v", k, err)
		case c.Legacy:
			return bad(v.badAt(v.prevSize), "checkpoint %d is in the legacy form, inside a framed segment", k)
		case c.Origin != nv.Name():
			return bad(v.badAt(v.prevSize), "checkpoint %d is of log %q, not %q", k, c.Origin, nv.Name())
		case ci < len(cps):
			return bad(v.badAt(min(n, cps[ci].Size)), "entries %d to %d are not covered by legacy checkpoint %d", v.prevSize, cps[ci].Size-1, ci)
		case c.Size != n:
			return bad(v.badAt(n), "checkpoint %d has size %d but follows entry %d (removed, reordered or injected entries or checkpoints)", k, c.Size, n-1)
		case c.Size <= v.prevSize && (c.Size > 0 || k > 0):
			return bad(min(v.prevSize, c.Size), "checkpoint %d has size %d, not above the previous %d (reordered or replayed checkpoints)", k, c.Size, v.prevSize)
		}
		root, err := fr.root()
		if err != nil {
			return err
		}
		if root != c.Hash {
			return bad(v.badAt(n), "entries %d to %d do not match signed checkpoint %d (changed, removed, reordered or injected entries)", v.prevSize, n-1, k)
		}
		for len(cache) > 0 && cache[0].size <= c.Size {
			if cacheErr == nil && (cache[0].size < c.Size || !bytes.Equal(cache[0].msg, msg)) {
				cacheErr = bad(-1, "the checkpoints file's checkpoint of %d entries is not the segments' (a cache record changed or forged)", cache[0].size)
			}
			cache = cache[1:]
		}
		if tornRec != nil && c.Size > tornAfter && len(tornRec) <= len(msg) && bytes.HasPrefix(append(bytes.Clone(msg), '\n'), tornRec) {
			tornRec = nil
		}
		framedSigs.check(k, v.prevSize, msg, c)
		v.prevSize = n
		final, finalIndex = c, k
		return nil
	}
	count, tail, err := v.scan(entry, checkpoint)
	if err == nil && ci < len(cps) {
		err = bad(v.badAt(count), "the log ends at entry %d but checkpoint %d covers %d entries (truncated)", count, ci, cps[ci].Size)
	}
	// Of an entry error, a signature error and a malformed checkpoint,
	// report the earliest.
	if err == nil && tornRec != nil && cacheErr == nil && !running {
		cacheErr = bad(-1, "the checkpoints file ends in a torn record that no checkpoint of the segments starts with (damaged)")
	}
	if err == nil && cached != nil && cached.Size > final.Size {
		err = bad(v.badAt(count), "the checkpoints file holds a signed checkpoint of %d entries but the segments' last intact checkpoint covers %d (entries or checkpoint records removed or damaged after entry %d)", cached.Size, final.Size, count)
	}
	for _, e := range []error{waitSignatures(), framedSigs.wait(), cpErr, cacheErr} {
		if e != nil && (err == nil || index(e) < index(err)) {
			err = e
		}
	}
	if err != nil {
		return err
	}
	v.res.Checkpoints = len(cps) + framedSigs.count
	_ = finalIndex
	if cached != nil && cached.Size == final.Size && cached.Hash != final.Hash {
		return bad(-1, "the checkpoints file and the segments hold different signed checkpoints of %d entries (a fork)", final.Size)
	}
	v.res.Entries = final.Size
	v.res.Root = final.Hash.String()
	if v.hashDiverged >= 0 && v.hashDiverged < final.Size {
		return bad(v.hashDiverged, "the stored hashes file disagrees with entry %d (proofs served would be wrong; delete the file while the log is closed and opening it rebuilds it)", v.hashDiverged)
	}
	if v.hashesEnd >= 0 && v.hashesEnd < final.Size {
		v.res.Warnings = append(v.res.Warnings, fmt.Sprintf("the stored hashes file ends at entry %d (not yet synced when the system stopped; opening the log recomputes it)", v.hashesEnd))
	}
	for _, a := range anchors {
		switch {
		case a.cp.Size > final.Size:
			return bad(final.Size, "%s covers %d entries but the log has %d (truncated since)", a.what, a.cp.Size, final.Size)
		case a.cp.Size == 0:
		case a.root == nil || *a.root != a.cp.Hash:
			return bad(-1, "the log's first %d entries are not those of %s (rewritten or forked since)", a.cp.Size, a.what)
		}
		if a.witness != "" {
			v.res.Witnessed = append(v.res.Witnessed, WitnessedCheckpoint{Witness: a.witness, Size: a.cp.Size, Root: a.cp.Hash.String()})
		}
	}
	// What lies past the final checkpoint: a batch being written, or one
	// whose fdatasync never returned (a crash), which Open discards.
	tail.Entries = count - final.Size
	if tail.Entries > MaxBatchLimit {
		return bad(final.Size, "%d entries follow the last signed checkpoint, more than one batch: injected entries", tail.Entries)
	}
	if tail.Entries > 0 || tail.Bytes > 0 {
		if running {
			v.res.Pending = tail.Entries
		} else {
			tail.After = final.Size
			v.res.Unsigned = &tail
		}
	}
	return nil
}

// anchor is a checkpoint whose tree the log must hold.
type anchor struct {
	cp      Checkpoint
	what    string
	witness string
	root    *tlog.Hash // the log's tree hash at cp.Size
}

// UnsignedTail is what follows the last signed checkpoint when no process
// has the log open: the records of a batch whose fdatasync had not
// returned when the process or the system stopped. None of it was
// acknowledged; the next Open cuts it off.
type UnsignedTail struct {
	// After is the size of the last signed checkpoint.
	After int64 `json:"after"`
	// Entries counts the complete entry records of the tail.
	Entries int64 `json:"entries"`
	// Bytes is the tail's length, torn records included.
	Bytes   int64  `json:"bytes"`
	Segment string `json:"segment"`
	Offset  int64  `json:"offset"`
}

// scan runs entry on every entry and checkpoint on every checkpoint
// record, in order, and returns how many entries it found and what follows
// the last checkpoint record of the last segment.
func (v *verifier) scan(entry func(int64, []byte) error, checkpoint func(int64, []byte) error) (int64, UnsignedTail, error) {
	var tail UnsignedTail
	segs, err := listSegments(v.adir)
	if err != nil {
		return 0, tail, err
	}
	idx := int64(0)
	for k, s := range segs {
		if s.start != idx {
			if s.start > idx {
				return idx, tail, bad(v.badAt(idx), "entries %d to %d are missing (segment %s starts at %d)", idx, s.start-1, filepath.Base(s.path), s.start)
			}
			return idx, tail, bad(s.start, "segment %s starts at %d, inside the previous segment", filepath.Base(s.path), s.start)
		}
		lastSeg := k+1 == len(segs)
		f, err := os.Open(s.path)
		if err != nil {
			return idx, tail, fmt.Errorf("audit: %w", err)
		}
		if !s.framed {
			lr := newLineReader(f)
			for {
				line, err := lr.next()
				if err == io.EOF {
					break
				}
				if err != nil {
					f.Close()
					return idx, tail, bad(v.badAt(idx), "%s: %v", filepath.Base(s.path), err)
				}
				if err := entry(idx, line); err != nil {
					f.Close()
					return idx, tail, err
				}
				idx++
			}
			f.Close()
			continue
		}
		fr := newFrameReader(f)
		cpOff, sinceCP := int64(0), int64(0)
		var ferr error
		for {
			typ, payload, err := fr.next()
			if err != nil {
				ferr = err
				break
			}
			switch typ {
			case recEntry:
				if err := entry(idx, payload); err != nil {
					f.Close()
					return idx, tail, err
				}
				idx++
				sinceCP++
			case recCheckpoint:
				if err := checkpoint(idx, payload); err != nil {
					f.Close()
					return idx, tail, err
				}
				cpOff, sinceCP = fr.off, 0
			}
		}
		end := fr.off
		fi, _ := f.Stat()
		f.Close()
		torn := !errors.Is(ferr, errFrameEnd)
		if !lastSeg {
			// Only the last segment may end in an unfinished batch.
			switch {
			case torn:
				return idx, tail, bad(v.badAt(idx), "segment %s: %v at offset %d", filepath.Base(s.path), ferr, end)
			case sinceCP > 0 || (fi != nil && fi.Size() != end):
				return idx, tail, bad(v.badAt(idx-sinceCP), "segment %s does not end with a checkpoint record", filepath.Base(s.path))
			}
			continue
		}
		tail.Segment, tail.Offset = filepath.Base(s.path), cpOff
		tail.Bytes = end - cpOff
		if torn && fi != nil {
			// A torn record: up to the end of what is not zero.
			tail.Bytes = nonZeroEnd(s.path, end, fi.Size()) - cpOff
		}
	}
	return idx, tail, nil
}

// nonZeroEnd is the offset after the last non-zero byte of the file at
// path in [from, size), or from.
func nonZeroEnd(path string, from, size int64) int64 {
	f, err := os.Open(path)
	if err != nil {
		return from
	}
	defer f.Close()
	buf := make([]byte, 1<<16)
	last := from
	for off := from; off < size; {
		n, err := f.ReadAt(buf, off)
		for i := n - 1; i >= 0; i-- {
			if buf[i] != 0 {
				last = off + int64(i) + 1
				break
			}
		}
		off += int64(n)
		if err != nil {
			break
		}
	}
	return last
}

// sigPool checks the signatures of framed checkpoint records on every
// CPU while the caller reads on; it keeps the error of the earliest bad
// one.
type sigPool struct {
	verifiers note.Verifiers
	jobs      chan sigJob
	wg        sync.WaitGroup
	mu        sync.Mutex
	err       error
	errAt     int
	count     int
	closed    bool
}

type sigJob struct {
	k    int
	prev int64
	msg  []byte
	cp   Checkpoint
}

func newSigPool(verifiers note.Verifiers) *sigPool {
	p := &sigPool{verifiers: verifiers, jobs: make(chan sigJob, 256), errAt: -1}
	for range runtime.GOMAXPROCS(0) {
		p.wg.Go(func() {
			for j := range p.jobs {
				c, err := OpenCheckpoint(j.msg, p.verifiers)
				if err == nil && c != j.cp {
					err = errors.New("signed text differs from the text parsed")
				}
				if err != nil {
					p.mu.Lock()
					if p.errAt < 0 || j.k < p.errAt {
						p.errAt, p.err = j.k, bad(j.prev, "checkpoint %d: %v", j.k, err)
					}
					p.mu.Unlock()
				}
			}
		})
	}
	return p
}

// check queues the check of record k (a copy of msg is taken).
func (p *sigPool) check(k int, prev int64, msg []byte, c Checkpoint) {
	p.count++
	p.jobs <- sigJob{k: k, prev: prev, msg: bytes.Clone(msg), cp: c}
}

// wait waits for the checks queued and returns the first error.
func (p *sigPool) wait() error {
	if !p.closed {
		p.closed = true
		close(p.jobs)
		p.wg.Wait()
	}
	return p.err
}

// parseCheckpoints parses every record's text (signatures are checked by
// checkSignatures) and checks origins and increasing sizes. It returns the
// checkpoints up to the first bad one, and an error for that one.
func parseCheckpoints(recs []cpRecord, origin string) ([]Checkpoint, error) {
	cps := make([]Checkpoint, 0, len(recs))
	prev := int64(0)
	for i, r := range recs {
		text := r.msg
		if k := bytes.LastIndex(text, []byte("\n\n")); k >= 0 {
			text = text[:k+1]
		}
		c, err := ParseCheckpoint(text)
		switch {
		case err != nil:
			return cps, bad(prev, "checkpoint %d: %v", i, err)
		case c.Origin != origin:
			return cps, bad(prev, "checkpoint %d is of log %q, not %q", i, c.Origin, origin)
		case c.Size <= prev:
			return cps, bad(min(prev, c.Size), "checkpoint %d has size %d, not above the previous %d (reordered or replayed checkpoints)", i, c.Size, prev)
		}
		cps = append(cps, c)
		prev = c.Size
	}
	return cps, nil
}

// checkSignatures opens every record with the verifiers, on all CPUs, and
// requires it to be the checkpoint parsed before. It returns an error for
// the first record that fails.
func checkSignatures(recs []cpRecord, cps []Checkpoint, verifiers note.Verifiers) error {
	errs := make([]error, len(recs))
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(recs); i += workers {
				c, err := OpenCheckpoint(recs[i].msg, verifiers)
				if err == nil && c != cps[i] {
					err = errors.New("signed text differs from the text parsed")
				}
				errs[i] = err
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			prev := int64(0)
			if i > 0 {
				prev = cps[i-1].Size
			}
			return bad(prev, "checkpoint %d: %v", i, err)
		}
	}
	return nil
}

// index is the entry index a verification error points at; errors without
// one sort last.
func index(err error) int64 {
	var ve *VerifyError
	if errors.As(err, &ve) && ve.Index >= 0 {
		return ve.Index
	}
	return 1<<63 - 1
}

func emptyRoot() tlog.Hash {
	h, _ := tlog.TreeHash(0, nil)
	return h
}

// lineHashes reads the stored hashes file sequentially, record by record.
type lineHashes struct {
	r   io.Reader
	buf [tlog.HashSize]byte
}

// match reads the next record's stored hashes and compares them with hs.
func (h *lineHashes) match(hs []tlog.Hash) (bool, error) {
	ok := true
	for _, x := range hs {
		if _, err := io.ReadFull(h.r, h.buf[:]); err != nil {
			return false, err
		}
		if h.buf != x {
			ok = false
		}
	}
	return ok, nil
}
