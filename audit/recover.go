package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

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
	legacyEnd int64 // offset past the checkpoints file's legacy records
	segStart  int64
	segBytes  int64
	discarded int64  // complete entries past the last checkpoint, dropped
	tornTail  bool   // a torn record was cut
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
	verifiers := note.VerifierList(k.verifier)

	segs, err := listSegments(adir)
	if err != nil {
		return nil, err
	}
	cpPath := filepath.Join(adir, CheckpointsFile)
	data, err := os.ReadFile(cpPath)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if clean, at := cacheData(data); at >= 0 {
		// The cache is not fsynced: after a power cut its tail may read as
		// zeros. Nothing in it is needed; the segments rebuild it.
		lg.Warn().Int64("offset", at).Msg("audit: the checkpoints file has zeros left by a power cut; cutting them")
		if err := truncateSync(cpPath, at); err != nil {
			return nil, err
		}
		data = clean
		repaired = append(repaired, "checkpoints file")
	}
	recs, torn, err := splitCheckpoints(data)
	if err != nil {
		return nil, fmt.Errorf("%w; %w", err, errDamaged)
	}
	if torn >= 0 {
		lg.Warn().Int64("offset", torn).Msg("audit: cutting a torn checkpoint record left by a crash")
		if err := truncateSync(cpPath, torn); err != nil {
			return nil, err
		}
		repaired = append(repaired, "torn checkpoint")
	}
	for _, r := range recs {
		if !bytes.HasPrefix(r.msg, []byte(LegacyCheckpointHeader+"\n")) {
			break
		}
		st.legacyEnd = r.end
	}
	// The latest checkpoint in the checkpoints file: before the framed
	// segments the durable state, since then a cache of it.
	var cached *Checkpoint
	if len(recs) > 0 {
		last := recs[len(recs)-1]
		c, err := OpenCheckpoint(last.msg, verifiers)
		if err != nil {
			return nil, fmt.Errorf("audit: last checkpoint: %w; %w", err, errDamaged)
		}
		if c.Origin != k.signer.Name() {
			return nil, damaged("last checkpoint is of log %q, not %q", c.Origin, k.signer.Name())
		}
		// A replayed older checkpoint at the end would make recovery cut
		// acknowledged entries: sizes must grow (Verify checks them all).
		if len(recs) > 1 {
			n, err := note.Open(recs[len(recs)-2].msg, verifiers)
			if err != nil {
				return nil, fmt.Errorf("audit: checkpoint before the last: %w; %w", err, errDamaged)
			}
			prev, err := ParseCheckpoint([]byte(n.Text))
			if err != nil || prev.Size >= c.Size {
				return nil, damaged("the last checkpoint (size %d) does not follow the one before it", c.Size)
			}
		}
		cached = &c
		st.cp, st.cpMsg = c, bytes.Clone(last.msg)
	}

	if len(segs) > 0 && segs[len(segs)-1].framed {
		if err := recoverFramed(adir, segs, st, verifiers, lg); err != nil {
			return nil, err
		}
		if st.discarded > 0 || st.tornTail {
			lg.Warn().Int64("entries", st.discarded).Msg("audit: discarding an unacknowledged tail left by a crash")
			if st.discarded == 0 {
				repaired = append(repaired, "torn entry")
			}
		}
	} else {
		// A log of legacy segments only (or none): the checkpoints file is
		// the durable state; the log goes on in a framed segment that
		// starts where the last legacy checkpoint ends.
		if cached != nil {
			if cached.Size > 0 && !cached.Legacy {
				return nil, damaged("the checkpoints file has a checkpoint of %d entries but there are no framed segments", cached.Size)
			}
			st.size = cached.Size
		}
		if err := recoverLegacy(segs, st, lg); err != nil {
			return nil, err
		}
		name := filepath.Join(adir, SegmentsDir, segmentName(st.size))
		if err := truncateOrCreate(name); err != nil {
			return nil, err
		}
		if err := syncDir(filepath.Join(adir, SegmentsDir)); err != nil {
			return nil, err
		}
		st.segStart, st.segBytes = st.size, 0
		if st.size > 0 {
			lg.Info().Int64("entries", st.size).Msg("audit: continuing a legacy log in framed segments")
		}
	}
	if cached != nil && cached.Size > st.size {
		return nil, damaged("the checkpoints file holds a signed checkpoint of %d entries but the segments only %d (acknowledged entries are missing)", cached.Size, st.size)
	}
	if st.size > 0 && (cached == nil || cached.Size < st.size) {
		// The cache lagged (it is not fsynced): bring it up to date.
		if err := appendSync(cpPath, append(bytes.Clone(st.cpMsg), '\n')); err != nil {
			return nil, err
		}
	}
	fi, err := os.Stat(cpPath)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	st.cpBytes = fi.Size()

	// The stored hashes: those of the last segment are recomputed (they
	// are fsynced only when a segment is full), the rest kept if whole.
	hpath := filepath.Join(adir, HashesFile)
	keep := st.segStart
	if len(segs) > 0 {
		keep = min(keep, segs[len(segs)-1].start)
	}
	rebuilt, err := recoverHashes(adir, hpath, st, keep)
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
	st.repaired = strings.Join(repaired, ", ")
	return st, nil
}

// cacheData cuts the checkpoints file at its first zero byte, which no
// record holds: blocks that were allocated but not written when the power
// went off read as zeros. It returns the offset of the cut, or -1.
func cacheData(data []byte) ([]byte, int64) {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return data[:i], int64(i)
	}
	return data, -1
}

// recoverLegacy cuts the last legacy segment after the st.size'th entry:
// entries past the last (legacy) checkpoint were never acknowledged.
func recoverLegacy(segs []segment, st *recovered, lg zerolog.Logger) error {
	if len(segs) == 0 {
		if st.size != 0 {
			return damaged("the last checkpoint covers %d entries but there are no segment files", st.size)
		}
		return nil
	}
	last := segs[len(segs)-1]
	b, err := os.ReadFile(last.path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	complete := int64(bytes.Count(b, []byte{'\n'}))
	entries := last.start + complete
	switch {
	case st.size < last.start:
		return damaged("the last checkpoint covers %d entries but segment %s starts at %d", st.size, filepath.Base(last.path), last.start)
	case entries < st.size:
		return damaged("the last checkpoint covers %d entries but only %d exist", st.size, entries)
	case entries-st.size > MaxBatchLimit:
		return damaged("%d entries follow the last checkpoint, more than one batch", entries-st.size)
	}
	cut := 0
	for i := last.start; i < st.size; i++ {
		cut += bytes.IndexByte(b[cut:], '\n') + 1
	}
	if cut < len(b) {
		st.discarded = entries - st.size
		lg.Warn().Int64("entries", st.discarded).Int("bytes", len(b)-cut).Msg("audit: discarding an unacknowledged tail left by a crash")
		if err := truncateSync(last.path, int64(cut)); err != nil {
			return err
		}
	}
	return nil
}

// framedScan is what scanning one framed segment found.
type framedScan struct {
	entries  int64  // index after the last entry record
	cpEnd    int64  // offset past the last checkpoint record, 0 if none
	cpSize   int64  // its size
	cpMsg    []byte // its note
	cps      int    // checkpoint records
	end      int64  // offset where the records end
	torn     bool   // they end in a torn or malformed record, not zeros
	afterCP  int64  // entry records after the last checkpoint record
	badOrder string // a checkpoint that does not cover exactly the entries before it
}

// scanFramed reads the records of a framed segment held in b. Every
// checkpoint record must cover exactly the entries before it (the writer
// appends it right after its batch).
func scanFramed(b []byte, start int64) framedScan {
	fs := framedScan{entries: start, cpSize: -1}
	pos := 0
	for {
		typ, payload, n, err := parseFrame(b[pos:])
		if err != nil {
			fs.torn = !errors.Is(err, errFrameEnd)
			break
		}
		switch typ {
		case recEntry:
			fs.entries++
			fs.afterCP++
		case recCheckpoint:
			c, err := ParseCheckpoint(noteText(payload))
			if err != nil || c.Size != fs.entries {
				if fs.badOrder == "" {
					fs.badOrder = fmt.Sprintf("the checkpoint record at offset %d does not cover the %d entries before it", pos, fs.entries)
				}
			}
			fs.cpEnd, fs.cpSize, fs.cpMsg, fs.afterCP = int64(pos+n), c.Size, payload, 0
			fs.cps++
		default:
			fs.torn = true
		}
		if fs.torn {
			break
		}
		pos += n
	}
	fs.end = int64(pos)
	return fs
}

// noteText is the text of a signed note: up to its empty line.
func noteText(msg []byte) []byte {
	if k := bytes.Index(msg, []byte("\n\n")); k >= 0 {
		return msg[:k+1]
	}
	return msg
}

// recoverFramed finds the durable state in the last framed segment: the
// last intact checkpoint record. Records after it (entries whose batch's
// fdatasync had not returned, a torn record) were never acknowledged and
// are cut off. A segment with no checkpoint record (a crash during its
// first batch) is emptied, and the state is the previous segment's last
// checkpoint.
func recoverFramed(adir string, segs []segment, st *recovered, verifiers note.Verifiers, lg zerolog.Logger) error {
	last := segs[len(segs)-1]
	b, err := os.ReadFile(last.path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	fs := scanFramed(b, last.start)
	if fs.badOrder != "" {
		return damaged("segment %s: %s", filepath.Base(last.path), fs.badOrder)
	}
	if fs.afterCP > MaxBatchLimit {
		return damaged("%d entries follow the last checkpoint, more than one batch", fs.afterCP)
	}
	st.segStart = last.start
	if fs.cps > 0 {
		c, err := OpenCheckpoint(fs.cpMsg, verifiers)
		if err != nil {
			return fmt.Errorf("audit: last checkpoint of %s: %w; %w", filepath.Base(last.path), err, errDamaged)
		}
		st.size, st.cp, st.cpMsg = c.Size, c, bytes.Clone(fs.cpMsg)
	} else {
		// The previous segment's last checkpoint, or the legacy ones'.
		st.size = last.start
		if len(segs) > 1 && segs[len(segs)-2].framed {
			prev := segs[len(segs)-2]
			pb, err := os.ReadFile(prev.path)
			if err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			ps := scanFramed(pb, prev.start)
			if ps.cps == 0 || ps.cpSize != last.start || ps.afterCP != 0 || ps.torn {
				return damaged("segment %s does not end with a checkpoint of the %d entries before %s", filepath.Base(prev.path), last.start, filepath.Base(last.path))
			}
			c, err := OpenCheckpoint(ps.cpMsg, verifiers)
			if err != nil {
				return fmt.Errorf("audit: last checkpoint of %s: %w; %w", filepath.Base(prev.path), err, errDamaged)
			}
			st.cp, st.cpMsg = c, bytes.Clone(ps.cpMsg)
		} else if st.cp.Size != last.start {
			return damaged("segment %s starts at %d but the last checkpoint before it covers %d entries", filepath.Base(last.path), last.start, st.cp.Size)
		}
	}
	st.segBytes = fs.cpEnd
	st.discarded = fs.entries - st.size
	st.tornTail = fs.torn
	if int64(len(b)) > fs.cpEnd {
		if fs.end > fs.cpEnd {
			lg.Warn().Int64("entries", st.discarded).Int64("bytes", fs.end-fs.cpEnd).Msg("audit: cutting the records past the last checkpoint")
		}
		if err := truncateSync(last.path, fs.cpEnd); err != nil {
			return err
		}
	}
	return nil
}

// truncateOrCreate makes name an empty file, durably.
func truncateOrCreate(name string) error {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// appendSync appends data to the file name and fsyncs it.
func appendSync(name string, data []byte) error {
	return openWriteSync(name, os.O_APPEND|os.O_CREATE, 0o600, data)
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

// scanSegment reads segment s, calling fn for complete entries with index
// in [from, to), and returns the index after the last complete entry it
// saw (in a framed segment, entry records; checkpoint records are skipped).
func scanSegment(s segment, from, to int64, fn func(int64, []byte) error) (int64, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return s.start, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	idx := s.start
	if s.framed {
		fr := newFrameReader(f)
		for idx < to {
			typ, payload, err := fr.next()
			if err != nil {
				// The end, or a torn record: the entries end here.
				break
			}
			if typ != recEntry {
				continue
			}
			if idx >= from {
				if err := fn(idx, payload); err != nil {
					return idx, err
				}
			}
			idx++
		}
		return idx, nil
	}
	br := newLineReader(f)
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
