package audit

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
)

// A framed segment (NNNNNNNN.seg) is a stream of records, each
//
//	type    1 byte: 'E' an entry, 'C' a signed checkpoint
//	length  3 bytes, big endian: the payload's length
//	crc     4 bytes, big endian: CRC-32C of type, length and payload
//	payload an entry's JSON (its Merkle leaf), or a checkpoint note
//
// A batch is its entries' records followed by one checkpoint record
// covering them, written with one write and made durable with one
// fdatasync. The file is preallocated with zeros ahead of the writer, so a
// zero type byte ends the stream. A record that is cut short or fails its
// checksum is a torn write; recovery cuts the stream back to the end of the
// last intact checkpoint record (see recoverFramed).
const (
	recEntry      byte = 'E'
	recCheckpoint byte = 'C'
	frameHeader        = 8
	// maxCheckpointRecord bounds a checkpoint record: a note with the
	// log's signature (witness cosignatures are kept elsewhere).
	maxCheckpointRecord = 4 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of parseFrame.
var (
	errFrameEnd   = errors.New("end of records")   // a zero type byte: preallocated space
	errFrameShort = errors.New("torn record")      // cut short
	errFrameBad   = errors.New("malformed record") // bad type, length or checksum
)

// beginFrame reserves a record header at the end of dst; finishFrame
// fills it once the payload has been appended after it. Together they
// frame a payload built in place, without copying or allocating.
func beginFrame(dst []byte) ([]byte, int) {
	return append(dst, 0, 0, 0, 0, 0, 0, 0, 0), len(dst)
}

func finishFrame(dst []byte, at int, typ byte) []byte {
	n := len(dst) - at - frameHeader
	h := dst[at : at+frameHeader]
	h[0] = typ
	h[1], h[2], h[3] = byte(n>>16), byte(n>>8), byte(n)
	c := crc32.Update(0, castagnoli, h[:4])
	c = crc32.Update(c, castagnoli, dst[at+frameHeader:])
	binary.BigEndian.PutUint32(h[4:], c)
	return dst
}

// appendFrame appends payload as a record of type typ.
func appendFrame(dst []byte, typ byte, payload []byte) []byte {
	dst, at := beginFrame(dst)
	return finishFrame(append(dst, payload...), at, typ)
}

// frameLimit is the largest payload a record of type typ may have.
func frameLimit(typ byte) int {
	switch typ {
	case recEntry:
		return MaxEntrySize - 1
	case recCheckpoint:
		return maxCheckpointRecord
	}
	return -1
}

// parseFrame parses the record at the start of b: its type, its payload (a
// slice of b) and its length in b.
func parseFrame(b []byte) (typ byte, payload []byte, n int, err error) {
	if len(b) == 0 {
		return 0, nil, 0, errFrameEnd
	}
	if b[0] == 0 {
		return 0, nil, 0, errFrameEnd
	}
	if len(b) < frameHeader {
		return 0, nil, 0, errFrameShort
	}
	typ = b[0]
	size := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	if size > frameLimit(typ) {
		return 0, nil, 0, fmt.Errorf("%w: type %#x, length %d", errFrameBad, typ, size)
	}
	if len(b) < frameHeader+size {
		return 0, nil, 0, errFrameShort
	}
	payload = b[frameHeader : frameHeader+size]
	c := crc32.Update(0, castagnoli, b[:4])
	if crc32.Update(c, castagnoli, payload) != binary.BigEndian.Uint32(b[4:8]) {
		return 0, nil, 0, fmt.Errorf("%w: checksum mismatch", errFrameBad)
	}
	return typ, payload, frameHeader + size, nil
}

// frameReader reads the records of a framed segment in order, in
// constant memory: the payload it returns is valid until the next call.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
	off int64 // offset of the next record
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 1<<16), buf: make([]byte, 0, 4<<10)}
}

// next returns the next record. errFrameEnd (also at the end of the file)
// ends a clean stream; errFrameShort and errFrameBad a torn one, at off.
func (f *frameReader) next() (typ byte, payload []byte, err error) {
	f.buf = f.buf[:frameHeader]
	n, err := io.ReadFull(f.r, f.buf)
	switch {
	case n == 0 && err == io.EOF:
		return 0, nil, errFrameEnd
	case n > 0 && f.buf[0] == 0:
		return 0, nil, errFrameEnd
	case err != nil:
		return 0, nil, errFrameShort
	}
	size := int(f.buf[1])<<16 | int(f.buf[2])<<8 | int(f.buf[3])
	if size > frameLimit(f.buf[0]) {
		return 0, nil, fmt.Errorf("%w: type %#x, length %d", errFrameBad, f.buf[0], size)
	}
	f.buf = slices.Grow(f.buf, size)[:frameHeader+size]
	if _, err := io.ReadFull(f.r, f.buf[frameHeader:]); err != nil {
		return 0, nil, errFrameShort
	}
	typ, payload, n, err = parseFrame(f.buf)
	if err != nil {
		return 0, nil, err
	}
	f.off += int64(n)
	return typ, payload, nil
}
