package audit

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Snapshot says which bytes of the audit directory make up the log up to
// one signed checkpoint: a consistent prefix that a copy (a backup) can
// take while a writer goes on appending. Copied in full (WriteFile for
// each of Files), it is a state the log was really in: Verify accepts it
// with no unsigned tail, and Open opens it without recovery.
//
// The segments are cut just past the checkpoint's record (framed) or its
// last entry (legacy); later segments are left out. The stored hashes are
// cut to the checkpoint's tree (Open recomputes any the writer had not yet
// written out). The checkpoints file, a cache that the writer may compact
// at any time, becomes its legacy records (which legacy segments need, and
// which compaction keeps as they are) followed by the checkpoint's note:
// the file as compaction would leave it. The other files (keys, witness
// cosignatures) are small and read whole when the snapshot is taken.
type Snapshot struct {
	// Checkpoint is the checkpoint the copy ends at; Note is its signed
	// note (nil for a log with no checkpoint yet).
	Checkpoint Checkpoint
	Note       []byte
	// Files are the members of the copy, sorted by name.
	Files []SnapshotFile
	adir  string
}

// SnapshotFile is one file of a Snapshot: the first Prefix bytes of the
// live file, then Data.
type SnapshotFile struct {
	// Name is the file's path inside the audit directory, with slashes
	// ("segments/00000000.seg").
	Name string
	Mode fs.FileMode
	// Prefix bytes are copied from the live file when the copy is made:
	// the writer never changes them once the snapshot is taken.
	Prefix int64
	// Data follows them: bytes read or made when the snapshot was taken.
	Data []byte
}

// Size is the length of the file in the copy.
func (f SnapshotFile) Size() int64 { return f.Prefix + int64(len(f.Data)) }

// WriteFile writes the copy of f, exactly f.Size() bytes, to w.
func (s *Snapshot) WriteFile(w io.Writer, f SnapshotFile) error {
	if f.Prefix > 0 {
		src, err := os.Open(filepath.Join(s.adir, filepath.FromSlash(f.Name)))
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		defer src.Close()
		if n, err := io.CopyN(w, src, f.Prefix); err != nil {
			if err == io.EOF {
				return fmt.Errorf("audit: %s holds %d bytes, fewer than the %d of the snapshot (truncated since; run hearth audit verify)", f.Name, n, f.Prefix)
			}
			return fmt.Errorf("audit: copying %s: %w", f.Name, err)
		}
	}
	_, err := w.Write(f.Data)
	return err
}

// TakeSnapshot returns a snapshot of the log in <dir>/audit read from its
// files alone. With no process writing the log, it ends at the last intact
// checkpoint record of the segments: what a crash left past it was never
// acknowledged and is left out. While another process writes the log, it
// ends at the latest checkpoint of the checkpoints cache, which the writer
// appends only once the batch is durable, so that the copy never holds a
// batch whose fdatasync has not returned. A process that has the log open
// uses Log.Snapshot.
func TakeSnapshot(dir string) (*Snapshot, error) {
	v, err := LoadVerifier(dir)
	if err != nil {
		return nil, err
	}
	adir := filepath.Join(dir, DirName)
	want := int64(-1)
	if writerRunning(filepath.Join(adir, LockFile)) {
		want = -2 // the cache's latest
	}
	return snapshotAt(adir, note.VerifierList(v), v.Name(), func() int64 { return want })
}

// Snapshot returns a snapshot of the log up to its latest acknowledged
// checkpoint (see TakeSnapshot): every entry whose Record returned before
// the call is in it.
func (l *Log) Snapshot() (*Snapshot, error) {
	// The witnesses' files are read first (snapshotAt): they hold
	// checkpoints pushed before this one.
	return snapshotAt(l.adir, note.VerifierList(l.keys.verifier), l.origin, l.Size)
}

// snapshotAt takes a snapshot at the checkpoint of size want(), called
// once the small files are read; -1 is the segments' last intact
// checkpoint, -2 the checkpoints cache's latest.
func snapshotAt(adir string, verifiers note.Verifiers, origin string, wantFn func() int64) (*Snapshot, error) {
	s := &Snapshot{adir: adir}
	if err := s.addSmallFiles(); err != nil {
		return nil, err
	}
	want := wantFn()

	// The checkpoints cache, read once (the writer may replace it).
	data, err := os.ReadFile(filepath.Join(adir, CheckpointsFile))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	data, _ = cacheData(data)
	recs, _, err := splitCheckpoints(data)
	if err != nil {
		return nil, fmt.Errorf("%w; %w", err, errDamaged)
	}
	var legacyEnd, legacySize int64
	var legacyNote []byte
	for _, r := range recs {
		if !bytes.HasPrefix(r.msg, []byte(LegacyCheckpointHeader+"\n")) {
			break
		}
		c, err := ParseCheckpoint(noteText(r.msg))
		if err != nil {
			return nil, fmt.Errorf("audit: checkpoints file: %w; %w", err, errDamaged)
		}
		legacyEnd, legacySize, legacyNote = r.end, c.Size, r.msg
	}
	cachedSize := int64(0)
	if len(recs) > 0 {
		c, err := ParseCheckpoint(noteText(recs[len(recs)-1].msg))
		if err != nil {
			return nil, fmt.Errorf("audit: checkpoints file: %w; %w", err, errDamaged)
		}
		cachedSize = c.Size
	}
	if want == -2 {
		want = cachedSize
	}

	segs, err := listSegments(adir)
	if err != nil {
		return nil, err
	}
	// Find the checkpoint's record: cpSeg is the index of the segment
	// holding it and cpEnd the offset just past it; cpSeg -1 for a legacy
	// checkpoint (in the checkpoints file) or none.
	cpSeg, cpEnd := -1, int64(0)
	var msg []byte
	size := int64(0)
	if want < 0 {
		// The last framed segment may hold no checkpoint yet (a crash
		// during its first batch): then the one before it.
		for i := len(segs) - 1; i >= 0 && segs[i].framed && cpSeg < 0; i-- {
			end, m, n, ok, err := findCheckpointRecord(segs[i], -1)
			if err != nil {
				return nil, err
			}
			if ok {
				cpSeg, cpEnd, msg, size = i, end, m, n
			}
		}
		if cpSeg < 0 {
			msg, size = legacyNote, legacySize
		}
		if cachedSize > size {
			return nil, damaged("the checkpoints file holds a signed checkpoint of %d entries but the segments' last intact one covers %d", cachedSize, size)
		}
	} else if want == legacySize && (want == 0 || legacyNote != nil) {
		msg, size = legacyNote, legacySize
	} else {
		// A framed checkpoint of size want follows entry want-1: it is in
		// the last segment that starts before want.
		for i := len(segs) - 1; i >= 0; i-- {
			if segs[i].start >= want {
				continue
			}
			if segs[i].framed {
				end, m, _, ok, err := findCheckpointRecord(segs[i], want)
				if err != nil {
					return nil, err
				}
				if ok {
					cpSeg, cpEnd, msg, size = i, end, m, want
				}
			}
			break
		}
		if cpSeg < 0 {
			return nil, damaged("no segment holds the checkpoint of %d entries", want)
		}
	}
	if msg != nil {
		c, err := OpenCheckpoint(msg, verifiers)
		if err != nil {
			return nil, fmt.Errorf("audit: the checkpoint of %d entries: %w; %w", size, err, errDamaged)
		}
		if c.Origin != origin || c.Size != size {
			return nil, damaged("the checkpoint of %d entries is of log %q size %d, not %q", size, c.Origin, c.Size, origin)
		}
		s.Checkpoint, s.Note = c, bytes.Clone(msg)
	} else {
		s.Checkpoint = Checkpoint{Origin: origin, Hash: emptyRoot()}
	}

	// The checkpoints file: its legacy records, then the checkpoint.
	cpf := SnapshotFile{Name: CheckpointsFile, Mode: 0o600, Prefix: legacyEnd}
	if cpSeg >= 0 {
		cpf.Data = append(bytes.Clone(msg), '\n')
	}
	s.Files = append(s.Files, cpf)

	// The stored hashes of the checkpoint's tree, as far as they are written.
	fi, err := os.Stat(filepath.Join(adir, HashesFile))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	s.Files = append(s.Files, SnapshotFile{Name: HashesFile, Mode: 0o600, Prefix: min(fi.Size(), tlog.StoredHashCount(size)*tlog.HashSize)})

	// The segments up to the checkpoint.
	for i, sg := range segs {
		var n int64
		switch {
		case sg.framed && i < cpSeg, !sg.framed && i+1 < len(segs) && segs[i+1].start <= size && sg.start < size:
			// Whole: the writer no longer appends to it.
			fi, err := os.Stat(sg.path)
			if err != nil {
				return nil, fmt.Errorf("audit: %w", err)
			}
			n = fi.Size()
		case sg.framed && i == cpSeg:
			n = cpEnd
		case !sg.framed && sg.start < size:
			// The last legacy segment, cut after the checkpoint's last
			// entry (a log not yet recovered may have a tail past it).
			if n, err = legacyLinesEnd(sg.path, size-sg.start); err != nil {
				return nil, err
			}
		default:
			continue
		}
		s.Files = append(s.Files, SnapshotFile{Name: SegmentsDir + "/" + filepath.Base(sg.path), Mode: 0o600, Prefix: n})
	}
	sort.Slice(s.Files, func(i, j int) bool { return s.Files[i].Name < s.Files[j].Name })
	return s, nil
}

// addSmallFiles reads the audit directory's other files whole (the keys,
// the witnesses' cosigned checkpoints): not the lock, the files the
// snapshot cuts, or temporary and hidden files.
func (s *Snapshot) addSmallFiles() error {
	err := filepath.WalkDir(s.adir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(s.adir, p)
		if err != nil || rel == "." {
			return err
		}
		name := filepath.ToSlash(rel)
		base := d.Name()
		switch {
		case d.IsDir() && (name == SegmentsDir || strings.HasPrefix(base, ".")):
			return filepath.SkipDir
		case d.IsDir(), !d.Type().IsRegular(), strings.HasPrefix(base, "."), strings.HasSuffix(base, ".tmp"):
			return nil
		case name == LockFile, name == HashesFile, name == CheckpointsFile:
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		s.Files = append(s.Files, SnapshotFile{Name: name, Mode: fi.Mode().Perm(), Data: b})
		return nil
	})
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// findCheckpointRecord reads the framed segment sg up to its first torn
// record or its end, and returns the offset just past the checkpoint
// record of size want (want < 0: the last intact one), its note and size.
func findCheckpointRecord(sg segment, want int64) (end int64, msg []byte, size int64, ok bool, err error) {
	f, err := os.Open(sg.path)
	if err != nil {
		return 0, nil, 0, false, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	fr := newFrameReader(f)
	for {
		typ, payload, err := fr.next()
		if err != nil {
			return end, msg, size, ok, nil
		}
		if typ != recCheckpoint {
			continue
		}
		c, err := ParseCheckpoint(noteText(payload))
		if err != nil {
			return 0, nil, 0, false, fmt.Errorf("audit: segment %s: checkpoint record at offset %d: %w; %w", filepath.Base(sg.path), fr.off, err, errDamaged)
		}
		if want < 0 || c.Size == want {
			end, msg, size, ok = fr.off, bytes.Clone(payload), c.Size, true
		}
		if c.Size == want {
			return end, msg, size, ok, nil
		}
	}
}

// legacyLinesEnd returns the offset just past the n-th line of a legacy
// segment.
func legacyLinesEnd(path string, n int64) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 256<<10)
	var off int64
	for i := int64(0); i < n; i++ {
		line, err := br.ReadSlice('\n')
		for err == bufio.ErrBufferFull {
			off += int64(len(line))
			line, err = br.ReadSlice('\n')
		}
		off += int64(len(line))
		if err != nil {
			return 0, damaged("segment %s holds fewer entries than its checkpoint covers", filepath.Base(path))
		}
	}
	return off, nil
}
