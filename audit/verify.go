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
	Pending  int64    `json:"pending,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	Origin   string   `json:"origin,omitempty"`
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
	v := &verifier{adir: filepath.Join(dir, DirName), res: &VerifyResult{}, hashDiverged: -1}
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

	// The saved checkpoint, if any.
	var saved *Checkpoint
	if opts.Checkpoint != nil {
		c, err := OpenCheckpoint(opts.Checkpoint, verifiers)
		if err != nil {
			return bad(-1, "saved checkpoint: %w", err)
		}
		if c.Origin != nv.Name() {
			return bad(-1, "saved checkpoint is of log %q, not %q", c.Origin, nv.Name())
		}
		saved = &c
	}

	// Checkpoints first: entries are written before the checkpoint that
	// covers them, so every entry the checkpoints read here cover exists.
	data, err := os.ReadFile(filepath.Join(v.adir, CheckpointsFile))
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	recs, torn, splitErr := splitCheckpoints(data)
	if torn >= 0 && !running {
		v.res.Warnings = append(v.res.Warnings, fmt.Sprintf("torn checkpoint record at offset %d (a crash while appending; opening the log repairs it)", torn))
	}
	cps, cpErr := parseCheckpoints(recs, nv.Name())
	if cpErr == nil && splitErr != nil {
		prev := int64(0)
		if len(cps) > 0 {
			prev = cps[len(cps)-1].Size
		}
		cpErr = bad(prev, "%v", splitErr)
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
	v.res.Checkpoints = len(cps)
	final := Checkpoint{Origin: nv.Name(), Hash: emptyRoot()}
	if len(cps) > 0 {
		final = cps[len(cps)-1]
	}

	// Then the entries, up to the final checkpoint.
	var hashes *lineHashes
	if hf, err := os.Open(filepath.Join(v.adir, HashesFile)); err == nil {
		defer hf.Close()
		hashes = &lineHashes{r: bufio.NewReaderSize(hf, 1<<16)}
	} else {
		v.res.Warnings = append(v.res.Warnings, "no stored hashes file")
	}
	var fr frontier
	ci := 0
	var savedRoot *tlog.Hash
	check := func(i int64, line []byte) error {
		if !indexPrefix(line, i) {
			return bad(v.badAt(i), "entry %d does not carry index %d (removed, reordered or injected entries)", i, i)
		}
		if opts.Strict {
			if _, err := ParseEntry(line); err != nil {
				return bad(v.badAt(i), "entry %d: %v", i, err)
			}
		}
		hs, err := fr.add(tlog.RecordHash(line))
		if err != nil {
			return err
		}
		if hashes != nil && v.hashDiverged < 0 {
			ok, err := hashes.match(hs)
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				// The tail of the hashes file is fsynced lazily; after a
				// crash it may be short, and Open recomputes it.
				v.res.Warnings = append(v.res.Warnings, fmt.Sprintf("the stored hashes file ends at entry %d (not yet synced when the system stopped; opening the log recomputes it)", i))
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
			ci++
		}
		if saved != nil && saved.Size == n {
			root, err := fr.root()
			if err != nil {
				return err
			}
			savedRoot = &root
		}
		return nil
	}
	count, err := v.scan(final.Size, check)
	if err == nil && count < final.Size {
		err = bad(v.badAt(count), "the log ends at entry %d but checkpoint %d covers %d entries (truncated)", count, len(cps)-1, final.Size)
	}
	// Of an entry error, a signature error and a malformed checkpoint,
	// report the earliest.
	for _, e := range []error{waitSignatures(), cpErr} {
		if e != nil && (err == nil || index(e) < index(err)) {
			err = e
		}
	}
	if err != nil {
		return err
	}
	v.res.Entries = final.Size
	v.res.Root = final.Hash.String()
	if v.hashDiverged >= 0 {
		return bad(v.hashDiverged, "the stored hashes file disagrees with entry %d (proofs served would be wrong; delete the file while the log is closed and opening it rebuilds it)", v.hashDiverged)
	}
	if saved != nil {
		switch {
		case saved.Size > final.Size:
			return bad(final.Size, "the saved checkpoint covers %d entries but the log has %d (truncated since it was saved)", saved.Size, final.Size)
		case saved.Size == 0:
		case savedRoot == nil || *savedRoot != saved.Hash:
			return bad(-1, "the log's first %d entries are not those of the saved checkpoint (rewritten since it was saved)", saved.Size)
		}
	}
	// What lies past the final checkpoint.
	extra, err := v.countFrom(final.Size)
	if err != nil {
		return err
	}
	if extra > 0 {
		if !running {
			return bad(final.Size, "%d entries follow the last signed checkpoint and no process has the log open: injected entries, or a crash tail that opening the log discards", extra)
		}
		v.res.Pending = extra
	}
	return nil
}

// scan runs check on entries [0, limit) and returns how many complete
// entries it found (at most limit).
func (v *verifier) scan(limit int64, check func(int64, []byte) error) (int64, error) {
	segs, err := listSegments(v.adir)
	if err != nil {
		return 0, err
	}
	idx := int64(0)
	for k, s := range segs {
		if idx >= limit {
			break
		}
		if s.start != idx {
			if s.start > idx {
				return idx, bad(v.badAt(idx), "entries %d to %d are missing (segment %s starts at %d)", idx, s.start-1, filepath.Base(s.path), s.start)
			}
			return idx, bad(s.start, "segment %s starts at %d, inside the previous segment", filepath.Base(s.path), s.start)
		}
		f, err := os.Open(s.path)
		if err != nil {
			return idx, fmt.Errorf("audit: %w", err)
		}
		lr := newLineReader(f)
		for idx < limit {
			line, err := lr.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				return idx, bad(v.badAt(idx), "%s: %v", filepath.Base(s.path), err)
			}
			if err := check(idx, line); err != nil {
				f.Close()
				return idx, err
			}
			idx++
		}
		f.Close()
		if k+1 < len(segs) && idx < limit && segs[k+1].start != idx {
			// This segment ended (maybe with a torn line) before the next
			// segment's first entry.
			return idx, bad(v.badAt(idx), "segment %s ends at entry %d but the next starts at %d", filepath.Base(s.path), idx, segs[k+1].start)
		}
	}
	return idx, nil
}

// countFrom counts the complete entries at index from and beyond.
func (v *verifier) countFrom(from int64) (int64, error) {
	n := int64(0)
	end, err := scanLines(v.adir, from, 1<<62, func(int64, []byte) error { n++; return nil })
	if err != nil && end == from && n == 0 {
		// No segment holds entry from: nothing follows.
		return 0, nil
	}
	return n, err
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
