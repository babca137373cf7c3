package audit

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// File is the part of *os.File the log writes through. Options.OpenFile
// may return a wrapper, to inject faults (a full disk, an I/O error) in
// tests.
type File interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Close() error
}

func osOpenFile(name string, flag int, perm os.FileMode) (File, error) {
	return os.OpenFile(name, flag, perm)
}

// segment is one segment file: its first entry's index, its path, and
// whether it is framed (NNNNNNNN.seg, records with length and checksum,
// entries and checkpoints) or legacy (NNNNNNNN.log, one entry per line,
// written before the framed format; the log no longer writes these).
type segment struct {
	start  int64
	path   string
	framed bool
}

// segmentName is the file name of the framed segment whose first entry
// is start; legacySegmentName that of a legacy one.
func segmentName(start int64) string       { return fmt.Sprintf("%08d.seg", start) }
func legacySegmentName(start int64) string { return fmt.Sprintf("%08d.log", start) }

// listSegments returns the segment files of the log in adir, sorted by
// their first index. A file in the segments directory whose name is not
// a canonical segment name is an error: nothing else belongs there; so is
// a legacy segment after a framed one.
func listSegments(adir string) ([]segment, error) {
	sdir := filepath.Join(adir, SegmentsDir)
	ents, err := os.ReadDir(sdir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	segs := make([]segment, 0, len(ents))
	for _, e := range ents {
		name := e.Name()
		num, ext, _ := strings.Cut(name, ".")
		start, err := strconv.ParseInt(num, 10, 64)
		framed := ext == "seg"
		canon := segmentName(start)
		if !framed {
			canon = legacySegmentName(start)
		}
		if err != nil || start < 0 || canon != name || !e.Type().IsRegular() {
			return nil, fmt.Errorf("audit: unexpected file %s in %s", name, sdir)
		}
		segs = append(segs, segment{start: start, path: filepath.Join(sdir, name), framed: framed})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].start < segs[j].start })
	for i := 1; i < len(segs); i++ {
		if segs[i-1].framed && !segs[i].framed {
			return nil, fmt.Errorf("audit: legacy segment %s follows framed segment %s in %s", filepath.Base(segs[i].path), filepath.Base(segs[i-1].path), sdir)
		}
		if segs[i-1].start == segs[i].start {
			return nil, fmt.Errorf("audit: two segments start at entry %d in %s", segs[i].start, sdir)
		}
	}
	return segs, nil
}

// dataSyncer is a File that can flush its data without the metadata that
// reading it back does not need (fdatasync(2)).
type dataSyncer interface{ Datasync() error }

// datasync makes what was written to f durable, with fdatasync where the
// file offers it and fsync otherwise.
func datasync(f File) error {
	switch f := f.(type) {
	case dataSyncer:
		return f.Datasync()
	case *os.File:
		return fdatasync(f)
	}
	return f.Sync()
}
