package audit

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"
)

// bundleIndex remembers where in its segment each entry bundle starts (the
// entries whose index is a multiple of the tile width), so that serving
// an entry tile reads one bundle, not the segment up to it. It is built
// as tiles are served; it holds 8 bytes per 256 entries.
type bundleIndex struct {
	mu   sync.Mutex
	segs map[string]map[int64]int64 // segment path -> entry index -> offset
}

// start returns the known position (entry index, offset) in segment s
// closest before entry from.
func (b *bundleIndex) start(s segment, from int64) (int64, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	idx, off := s.start, int64(0)
	for k := from - from%torchwood.TileWidth; k > s.start; k -= torchwood.TileWidth {
		if o, ok := b.segs[s.path][k]; ok {
			return k, o
		}
	}
	return idx, off
}

func (b *bundleIndex) note(s segment, idx, off int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.segs == nil {
		b.segs = map[string]map[int64]int64{}
	}
	if b.segs[s.path] == nil {
		b.segs[s.path] = map[int64]int64{}
	}
	b.segs[s.path][idx] = off
}

// entryBundle reads the entries of entry tile t, each with its 2-byte
// big-endian length (tlog-tiles "entry bundles").
func (l *Log) entryBundle(t tlog.Tile) ([]byte, error) {
	from := t.N * torchwood.TileWidth
	to := from + int64(t.W)
	segs, err := listSegments(l.adir)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 512*t.W)
	idx := from
	for i, s := range segs {
		if idx >= to {
			break
		}
		if i+1 < len(segs) && segs[i+1].start <= idx {
			continue
		}
		if s.start > idx {
			return nil, fmt.Errorf("audit: no segment holds entry %d", idx)
		}
		next, err := l.readBundle(s, idx, to, func(e []byte) error {
			var err error
			out, err = torchwood.AppendTileEntry(out, e)
			return err
		})
		if err != nil {
			return nil, err
		}
		idx = next
	}
	if idx != to {
		return nil, fmt.Errorf("audit: entries end at %d, before %d", idx, to)
	}
	return out, nil
}

// readBundle calls fn with the entries of segment s in [from, to) and
// returns the index after the last one read, starting from the closest
// known bundle offset and noting the bundle offsets it passes.
func (l *Log) readBundle(s segment, from, to int64, fn func([]byte) error) (int64, error) {
	idx, off := l.bundles.start(s, from)
	f, err := os.Open(s.path)
	if err != nil {
		return idx, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	r := io.NewSectionReader(f, off, 1<<62)
	var next func() ([]byte, int64, error) // entry, its offset, error
	if s.framed {
		fr := newFrameReader(r)
		next = func() ([]byte, int64, error) {
			for {
				at := off + fr.off
				typ, payload, err := fr.next()
				if err != nil {
					return nil, 0, io.EOF
				}
				if typ == recEntry {
					return payload, at, nil
				}
			}
		}
	} else {
		br := bufio.NewReaderSize(r, 1<<16)
		pos := off
		next = func() ([]byte, int64, error) {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return nil, 0, io.EOF
			}
			at := pos
			pos += int64(len(line))
			return bytes.TrimSuffix(line, []byte("\n")), at, nil
		}
	}
	for idx < to {
		e, at, err := next()
		if err != nil {
			break
		}
		if idx%torchwood.TileWidth == 0 {
			l.bundles.note(s, idx, at)
		}
		if idx >= from {
			if err := fn(e); err != nil {
				return idx, err
			}
		}
		idx++
	}
	return idx, nil
}
