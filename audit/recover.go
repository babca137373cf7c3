package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// recovered is the durable state Open found.
type recovered struct {
	size      int64
	cp        Checkpoint
	cpMsg     []byte
	cpBytes   int64
	segStart  int64
	segBytes  int64
	discarded int64  // complete entries past the last checkpoint, dropped
	repaired  string // what else was repaired, for the audit.start entry
}

// errDamaged marks states a crash cannot explain.
var errDamaged = errors.New("run `hearth audit verify`")

func damaged(format string, args ...any) error {
	return fmt.Errorf("audit: %s; %w", fmt.Sprintf(format, args...), errDamaged)
}

func recoverLog(adir string, k *keys, lg zerolog.Logger) (*recovered, error) {
	st := &recovered{}
	var repaired []string

	// 1. The last complete checkpoint is the durable state.
	cpPath := filepath.Join(adir, CheckpointsFile)
	data, err := os.ReadFile(cpPath)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	recs, torn, err := splitCheckpoints(data)
	if err != nil {
		return nil, fmt.Errorf("%w; %w", err, errDamaged)
	}
	if len(recs) > 0 {
		last := recs[len(recs)-1]
		c, err := OpenCheckpoint(last.msg, note.VerifierList(k.verifier))
		if err != nil {
			return nil, fmt.Errorf("audit: last checkpoint: %w; %w", err, errDamaged)
		}
		if c.Origin != k.signer.Name() {
			return nil, damaged("last checkpoint is of log %q, not %q", c.Origin, k.signer.Name())
		}
		st.size, st.cp, st.cpMsg, st.cpBytes = c.Size, c, bytes.Clone(last.msg), last.end
		// A replayed older checkpoint at the end would make recovery cut
		// acknowledged entries: sizes must grow (Verify checks them all).
		if len(recs) > 1 {
			n, err := note.Open(recs[len(recs)-2].msg, note.VerifierList(k.verifier))
			if err != nil {
				return nil, fmt.Errorf("audit: checkpoint before the last: %w; %w", err, errDamaged)
			}
			prev, err := ParseCheckpoint([]byte(n.Text))
			if err != nil || prev.Size >= c.Size {
				return nil, damaged("the last checkpoint (size %d) does not follow the one before it", c.Size)
			}
		}
	}
	if torn >= 0 {
		lg.Warn().Int64("offset", torn).Msg("audit: cutting a torn checkpoint record left by a crash")
		if err := truncateSync(cpPath, torn); err != nil {
			return nil, err
		}
		repaired = append(repaired, "torn checkpoint")
	}

	// 2. The entries: exactly st.size of them are kept.
	segs, err := listSegments(adir)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		if st.size != 0 {
			return nil, damaged("the last checkpoint covers %d entries but there are no segment files", st.size)
		}
		name := filepath.Join(adir, SegmentsDir, segmentName(0))
		if err := writeFileSync(name, nil, 0o600); err != nil {
			return nil, err
		}
		if err := syncDir(filepath.Join(adir, SegmentsDir)); err != nil {
			return nil, err
		}
	} else {
		last := segs[len(segs)-1]
		b, err := os.ReadFile(last.path)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		complete := int64(bytes.Count(b, []byte{'\n'}))
		entries := last.start + complete
		switch {
		case st.size < last.start:
			return nil, damaged("the last checkpoint covers %d entries but segment %s starts at %d", st.size, filepath.Base(last.path), last.start)
		case entries < st.size:
			return nil, damaged("the last checkpoint covers %d entries but only %d exist", st.size, entries)
		case entries-st.size > MaxBatchLimit:
			return nil, damaged("%d entries follow the last checkpoint, more than one batch", entries-st.size)
		}
		// Cut after the st.size'th entry: uncovered entries and any torn line.
		cut := 0
		for i := last.start; i < st.size; i++ {
			cut += bytes.IndexByte(b[cut:], '\n') + 1
		}
		if cut < len(b) {
			st.discarded = entries - st.size
			lg.Warn().Int64("entries", st.discarded).Int("bytes", len(b)-cut).Msg("audit: discarding an unacknowledged tail left by a crash")
			if err := truncateSync(last.path, int64(cut)); err != nil {
				return nil, err
			}
			if st.discarded == 0 {
				repaired = append(repaired, "torn entry")
			}
		}
		st.segStart, st.segBytes = last.start, int64(cut)
	}

	// 3. The stored hashes: those of the last segment are recomputed (they
	// are fsynced only when a segment is full), the rest kept if whole.
	hpath := filepath.Join(adir, HashesFile)
	rebuilt, err := recoverHashes(adir, hpath, st, st.segStart)
	if err != nil {
		return nil, err
	}
	if rebuilt {
		repaired = append(repaired, "stored hashes")
	}
	if st.size > 0 {
		root, err := rootFromFile(hpath, st.size)
		if err != nil || root != st.cp.Hash {
			lg.Warn().Msg("audit: stored hashes disagree with the last checkpoint; rebuilding them from the entries")
			if _, err := recoverHashes(adir, hpath, st, 0); err != nil {
				return nil, err
			}
			if root, err = rootFromFile(hpath, st.size); err != nil {
				return nil, err
			}
			if root != st.cp.Hash {
				return nil, damaged("the entries do not match the last signed checkpoint")
			}
			if !rebuilt {
				repaired = append(repaired, "stored hashes")
			}
		}
	}
	for i, r := range repaired {
		if i == 0 {
			st.repaired = r
		} else {
			st.repaired += ", " + r
		}
	}
	return st, nil
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: truncating %s: %w", path, err)
	}
	return nil
}

func rootFromFile(hpath string, size int64) (tlog.Hash, error) {
	f, err := os.Open(hpath)
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	return tlog.TreeHash(size, hashFile{f})
}

// recoverHashes makes the hashes file hold exactly the stored hashes of
// st.size records: it keeps those of the first keep records at most (as
// many whole records as the file holds), and recomputes the rest from the
// entries. It reports whether the file lacked hashes it had to recompute.
func recoverHashes(adir, hpath string, st *recovered, keep int64) (bool, error) {
	f, err := os.OpenFile(hpath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("audit: %w", err)
	}
	have := fi.Size()
	lacking := have < tlog.StoredHashCount(st.size)*tlog.HashSize
	// Keep the longest prefix that holds the hashes of whole records.
	n := int64(sort.Search(int(keep), func(k int) bool {
		return tlog.StoredHashCount(int64(k)+1)*tlog.HashSize > have
	}))
	if err := f.Truncate(tlog.StoredHashCount(n) * tlog.HashSize); err != nil {
		return false, fmt.Errorf("audit: %w", err)
	}
	hs, err := newHashStore(f, n)
	if err != nil {
		return false, fmt.Errorf("audit: %w", err)
	}
	var buf []byte
	flush := func() error {
		buf = hs.appendPending(buf[:0])
		if _, err := f.WriteAt(buf, hs.base*tlog.HashSize); err != nil {
			return fmt.Errorf("audit: rebuilding stored hashes: %w", err)
		}
		hs.commit()
		return nil
	}
	next, err := scanLines(adir, n, st.size, func(_ int64, line []byte) error {
		if err := hs.add(line); err != nil {
			return err
		}
		if len(hs.pending) >= 1<<16 {
			return flush()
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if next != st.size {
		return false, damaged("entries %d to %d are missing", next, st.size)
	}
	if err := flush(); err != nil {
		return false, err
	}
	return lacking, f.Sync()
}

// scanLines calls fn with each complete entry line (without newline) whose
// index is in [from, to), reading the segment files in order, and returns
// the index after the last line it read: less than to if the entries end
// first. Segment files must follow each other without gap or overlap.
func scanLines(adir string, from, to int64, fn func(index int64, line []byte) error) (int64, error) {
	segs, err := listSegments(adir)
	if err != nil {
		return from, err
	}
	first := 0
	for i, s := range segs {
		if s.start <= from {
			first = i
		}
	}
	if len(segs) == 0 || segs[first].start > from {
		if from < to {
			return from, fmt.Errorf("audit: no segment holds entry %d; %w", from, errDamaged)
		}
		return from, nil
	}
	idx := from
	for i := first; i < len(segs) && idx < to; i++ {
		s := segs[i]
		if i > first && s.start != idx {
			return idx, fmt.Errorf("audit: segment %s starts at %d, want %d; %w", filepath.Base(s.path), s.start, idx, errDamaged)
		}
		j, err := scanSegment(s, from, to, fn)
		if err != nil {
			return idx, err
		}
		idx = j
		if i+1 < len(segs) && idx < to && idx != segs[i+1].start {
			// The segment ended early (a torn line) or the next starts late.
			return idx, fmt.Errorf("audit: segment %s ends at entry %d but the next starts at %d; %w", filepath.Base(s.path), idx, segs[i+1].start, errDamaged)
		}
	}
	return idx, nil
}

// scanSegment reads segment s, calling fn for complete lines with index in
// [from, to), and returns the index after the last complete line it saw.
func scanSegment(s segment, from, to int64, fn func(int64, []byte) error) (int64, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return s.start, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	br := newLineReader(f)
	idx := s.start
	for idx < to {
		line, err := br.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return idx, fmt.Errorf("audit: %s entry %d: %w", filepath.Base(s.path), idx, err)
		}
		if idx >= from {
			if err := fn(idx, line); err != nil {
				return idx, err
			}
		}
		idx++
	}
	return idx, nil
}
