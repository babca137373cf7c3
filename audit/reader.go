package audit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"
)

// lineReader reads newline-terminated lines of at most MaxEntrySize bytes;
// a final line without newline (a torn write) reads as io.EOF.
type lineReader struct {
	r    *bufio.Reader
	long []byte
}

func newLineReader(f *os.File) *lineReader {
	// A buffer as large as the file, within [4 KiB, 1 MiB]: small files
	// are read without a large allocation; longer lines are assembled.
	size := int64(1 << 20)
	if fi, err := f.Stat(); err == nil {
		size = min(max(fi.Size()+1, 4<<10), size)
	}
	return &lineReader{r: bufio.NewReaderSize(f, int(size))}
}

func (l *lineReader) next() ([]byte, error) {
	line, err := l.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		l.long = append(l.long[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(l.long) <= MaxEntrySize {
			line, err = l.r.ReadSlice('\n')
			l.long = append(l.long, line...)
		}
		line = l.long
	}
	if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	if len(line) > MaxEntrySize {
		return nil, fmt.Errorf("entry longer than %d bytes", MaxEntrySize)
	}
	return line[:len(line)-1], nil
}

// Reader reads a log's files directly, read only, whether or not a process
// has the log open: it sees the entries covered by the latest complete
// signed checkpoint, never a batch still being written. The audit tail
// command uses it.
type Reader struct {
	adir      string
	verifiers note.Verifiers
}

// NewReader returns a Reader of the log in <dir>/audit, checking
// checkpoints with the log's verifier key.
func NewReader(dir string) (*Reader, error) {
	v, err := LoadVerifier(dir)
	if err != nil {
		return nil, err
	}
	return &Reader{adir: filepath.Join(dir, DirName), verifiers: note.VerifierList(v)}, nil
}

// Latest returns the latest complete checkpoint, checked against the
// log's key, and its signed note. An empty log has the zero Checkpoint and
// a nil note.
func (r *Reader) Latest() (Checkpoint, []byte, error) {
	f, err := os.Open(filepath.Join(r.adir, CheckpointsFile))
	if err != nil {
		return Checkpoint{}, nil, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Checkpoint{}, nil, fmt.Errorf("audit: %w", err)
	}
	size := fi.Size()
	for window := int64(16 << 10); ; window *= 4 {
		window = min(window, size)
		buf := make([]byte, window)
		if _, err := f.ReadAt(buf, size-window); err != nil {
			return Checkpoint{}, nil, fmt.Errorf("audit: reading checkpoints: %w", err)
		}
		if rec, ok := lastCheckpointRecord(buf, size-window); ok {
			c, err := OpenCheckpoint(rec.msg, r.verifiers)
			if err != nil {
				return Checkpoint{}, nil, err
			}
			return c, rec.msg, nil
		}
		if window == size {
			if size > 0 && !startsTorn(buf) {
				return Checkpoint{}, nil, errors.New("audit: the checkpoints file holds no complete checkpoint")
			}
			return Checkpoint{}, nil, nil
		}
	}
}

// startsTorn reports whether data is the start of a checkpoint record cut
// short, as a crash during the very first batch leaves it.
func startsTorn(data []byte) bool {
	recs, torn, err := splitCheckpoints(data)
	return err == nil && len(recs) == 0 && torn == 0
}

// Read returns the entries with index in [from, from+n), or fewer if the
// latest checkpoint covers fewer.
func (r *Reader) Read(from int64, n int) ([]Entry, error) {
	c, _, err := r.Latest()
	if err != nil {
		return nil, err
	}
	return readEntries(r.adir, from, min(from+int64(n), c.Size), nil)
}

// Tail returns the last n entries for which match returns true (all
// entries if match is nil), oldest first, and the size of the log they
// were read from (to follow it from there).
func (r *Reader) Tail(n int, match func(Entry) bool) ([]Entry, int64, error) {
	c, _, err := r.Latest()
	if err != nil {
		return nil, 0, err
	}
	es, err := tailEntries(r.adir, c.Size, n, match)
	return es, c.Size, err
}

func readEntries(adir string, from, to int64, match func(Entry) bool) ([]Entry, error) {
	if from < 0 {
		return nil, fmt.Errorf("audit: negative index %d", from)
	}
	var out []Entry
	if from >= to {
		return out, nil
	}
	next, err := scanLines(adir, from, to, func(i int64, line []byte) error {
		e, err := ParseEntry(line)
		if err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if e.Index != i {
			return fmt.Errorf("audit: entry %d has index %d; %w", i, e.Index, errDamaged)
		}
		if match == nil || match(e) {
			out = append(out, e)
		}
		return nil
	})
	if err == nil && next < to {
		err = fmt.Errorf("audit: entries end at %d, before %d; %w", next, to, errDamaged)
	}
	return out, err
}

// tailEntries reads segments from the last one backwards until it has n
// matching entries below size.
func tailEntries(adir string, size int64, n int, match func(Entry) bool) ([]Entry, error) {
	segs, err := listSegments(adir)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for i := len(segs) - 1; i >= 0 && len(out) < n; i-- {
		if segs[i].start >= size {
			continue
		}
		es, err := readEntries(adir, segs[i].start, size, match)
		if err != nil {
			return nil, err
		}
		if k := n - len(out); len(es) > k {
			es = es[len(es)-k:]
		}
		out = append(es, out...)
		size = segs[i].start
	}
	return out, nil
}

// Read returns the entries with index in [from, from+n) that the log has
// acknowledged, or fewer.
func (l *Log) Read(from int64, n int) ([]Entry, error) {
	return readEntries(l.adir, from, min(from+int64(n), l.Size()), nil)
}

// Tail returns the last n acknowledged entries for which match returns
// true (all if match is nil), oldest first.
func (l *Log) Tail(n int, match func(Entry) bool) ([]Entry, error) {
	return tailEntries(l.adir, l.Size(), n, match)
}
