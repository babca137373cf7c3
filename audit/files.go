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

// segment is one segment file: its first entry's index and its path.
type segment struct {
	start int64
	path  string
}

// segmentName is the file name of the segment whose first entry is start.
func segmentName(start int64) string { return fmt.Sprintf("%08d.log", start) }

// listSegments returns the segment files of the log in adir, sorted by
// their first index. A file in the segments directory whose name is not
// a canonical segment name is an error: nothing else belongs there.
func listSegments(adir string) ([]segment, error) {
	sdir := filepath.Join(adir, SegmentsDir)
	ents, err := os.ReadDir(sdir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	segs := make([]segment, 0, len(ents))
	for _, e := range ents {
		name := e.Name()
		num, ok := strings.CutSuffix(name, ".log")
		start, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || start < 0 || segmentName(start) != name || !e.Type().IsRegular() {
			return nil, fmt.Errorf("audit: unexpected file %s in %s", name, sdir)
		}
		segs = append(segs, segment{start: start, path: filepath.Join(sdir, name)})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].start < segs[j].start })
	return segs, nil
}
