package audit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// LegacyCheckpointHeader is the first line of the checkpoints hearth wrote
// before it adopted the C2SP format: logs made then keep verifying, and go
// on in the new format with no gap in the tree (see ParseCheckpoint).
const LegacyCheckpointHeader = "hearth audit log v1"

// CheckpointHeader is the old name of LegacyCheckpointHeader.
//
// Deprecated: new checkpoints have no header line.
const CheckpointHeader = LegacyCheckpointHeader

// Checkpoint is the state of the log at one size: the RFC 6962 Merkle tree
// hash of its first Size entries. Its text form, which the log signs as a
// note (c2sp.org/signed-note, Ed25519, type 0x01, with a key named like the
// origin), is the c2sp.org/tlog-checkpoint v1.0.0 body, three lines and no
// extension lines:
//
//	<origin>
//	<size, canonical decimal>
//	<root hash, standard base64>
//
// Checkpoints written before that format (Legacy) have one more line,
// LegacyCheckpointHeader, first; ParseCheckpoint reads both, the log writes
// only the new one.
type Checkpoint struct {
	// Origin names the log; it is also the name of the log's signing key.
	Origin string
	Size   int64
	Hash   tlog.Hash
	// Legacy marks a checkpoint in the old four-line form.
	Legacy bool
}

// Text returns the checkpoint's text, the message that is signed.
func (c Checkpoint) Text() []byte {
	b := make([]byte, 0, 128)
	if c.Legacy {
		b = append(b, LegacyCheckpointHeader+"\n"...)
	}
	b = append(b, c.Origin...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, c.Size, 10)
	b = append(b, '\n')
	b = append(b, c.Hash.String()...)
	return append(b, '\n')
}

// ErrMalformedCheckpoint is wrapped by the errors of ParseCheckpoint.
var ErrMalformedCheckpoint = errors.New("audit: malformed checkpoint")

// ParseCheckpoint parses a checkpoint text strictly: the three lines of
// c2sp.org/tlog-checkpoint (or the four of a legacy checkpoint), each
// ending in a newline, nothing after (this log writes no extension lines,
// so it accepts none); a valid origin; a size in canonical decimal (no
// sign, no leading zero); a hash in canonical standard base64 of exactly
// 32 bytes.
func ParseCheckpoint(text []byte) (Checkpoint, error) {
	var c Checkpoint
	lines := bytes.SplitAfter(text, []byte("\n"))
	legacy := len(lines) > 0 && string(lines[0]) == LegacyCheckpointHeader+"\n"
	if legacy {
		lines = lines[1:]
	}
	if len(lines) != 4 || len(lines[3]) != 0 {
		return c, fmt.Errorf("%w: want exactly three lines (origin, size, hash)", ErrMalformedCheckpoint)
	}
	for i := range 3 {
		lines[i] = lines[i][:len(lines[i])-1]
	}
	if !validOrigin(string(lines[0])) {
		return c, fmt.Errorf("%w: bad origin", ErrMalformedCheckpoint)
	}
	size, ok := parseCanonicalInt(string(lines[1]))
	if !ok {
		return c, fmt.Errorf("%w: size is not a canonical decimal", ErrMalformedCheckpoint)
	}
	h, ok := parseCanonicalHash(string(lines[2]))
	if !ok {
		return c, fmt.Errorf("%w: hash is not canonical base64 of 32 bytes", ErrMalformedCheckpoint)
	}
	return Checkpoint{Origin: string(lines[0]), Size: size, Hash: h, Legacy: legacy}, nil
}

// OpenCheckpoint checks the signed checkpoint msg (a note) against
// verifiers and parses its text. At least one signature must verify and
// come from a key named like the checkpoint's origin; signatures by unknown
// keys are ignored.
func OpenCheckpoint(msg []byte, verifiers note.Verifiers) (Checkpoint, error) {
	n, err := note.Open(msg, verifiers)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint signature: %w", err)
	}
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, err
	}
	// note decodes signatures with lenient base64, which ignores the
	// padding bits of the last character: insist on the one canonical
	// encoding, so that every byte of a checkpoint record matters.
	for _, s := range append(n.Sigs, n.UnverifiedSigs...) {
		if _, err := base64.StdEncoding.Strict().DecodeString(s.Base64); err != nil {
			return Checkpoint{}, fmt.Errorf("%w: signature is not canonical base64", ErrMalformedCheckpoint)
		}
	}
	for _, s := range n.Sigs {
		if s.Name == c.Origin {
			return c, nil
		}
	}
	return Checkpoint{}, fmt.Errorf("audit: checkpoint of %q is not signed by a key of that name", c.Origin)
}

// signCheckpoint returns c signed by s as a note.
func signCheckpoint(c Checkpoint, s note.Signer) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: string(c.Text())}, s)
	if err != nil {
		return nil, fmt.Errorf("audit: signing checkpoint: %w", err)
	}
	return msg, nil
}

// validOrigin: 1 to 128 bytes of letters, digits and . _ - : / (a valid
// note key name, which also forbids spaces and '+').
func validOrigin(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':' || c == '/') {
			return false
		}
	}
	return true
}

// parseCanonicalInt parses a non-negative int64 written without sign,
// leading zeros or other decoration.
func parseCanonicalInt(s string) (int64, bool) {
	if s == "" || len(s) > 19 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func parseCanonicalHash(s string) (tlog.Hash, bool) {
	var h tlog.Hash
	if len(s) != 44 {
		return h, false
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != tlog.HashSize {
		return h, false
	}
	copy(h[:], b)
	return h, h.String() == s
}

// The checkpoints file holds signed checkpoints in order, each note
// followed by one empty line:
//
//	<checkpoint text>\n— <key name> <sig>\n\n
//
// Before the framed segments, it was the log's only record of its
// checkpoints (legacy four-line texts); now the authoritative copy of each
// checkpoint is the record in the segment stream, and this file is a
// cache of them, appended after each batch is durable and never fsynced,
// that lets readers find the latest checkpoint without scanning a segment
// (Reader.Latest) and lets recovery notice signed history that went
// missing from the segments. A record that ends before its final empty
// line is a torn tail (a crash while appending); a complete record that
// does not have this shape is damage.

// cpRecord is one record of the checkpoints file.
type cpRecord struct {
	msg []byte // the signed note, without the separating empty line
	end int64  // offset just past the record, separator included
}

// maxCheckpointLines bounds a checkpoint text: four lines (legacy).
const maxCheckpointLines = 4

// splitCheckpoints splits the checkpoints file into records. torn is the
// offset of an incomplete final record, or -1.
func splitCheckpoints(data []byte) (recs []cpRecord, torn int64, err error) {
	pos := 0
	for pos < len(data) {
		start := pos
		line := func() ([]byte, bool) {
			i := bytes.IndexByte(data[pos:], '\n')
			if i < 0 {
				return nil, false
			}
			l := data[pos : pos+i]
			pos += i + 1
			return l, true
		}
		complete := true
		var bad string
		for k := 0; complete && bad == ""; k++ {
			l, ok := line()
			if !ok {
				complete = false
				break
			}
			if len(l) == 0 {
				if k < 3 {
					bad = "has fewer than three lines before its signatures"
				}
				break
			}
			if k == 0 && bytes.HasPrefix(l, []byte("— ")) {
				bad = "starts with a signature"
			} else if k >= maxCheckpointLines {
				bad = "has no empty line before its signatures"
			}
		}
		sigs := 0
		for complete && bad == "" {
			l, ok := line()
			if !ok {
				complete = false
				break
			}
			if len(l) == 0 {
				if sigs == 0 {
					bad = "has no signature"
				}
				break
			}
			if !bytes.HasPrefix(l, []byte("— ")) {
				bad = "has a line that is not a signature"
				break
			}
			sigs++
		}
		if bad != "" {
			return recs, -1, fmt.Errorf("audit: checkpoints file: record %d at offset %d %s", len(recs), start, bad)
		}
		if !complete {
			return recs, int64(start), nil
		}
		recs = append(recs, cpRecord{msg: data[start : pos-1], end: int64(pos)})
	}
	return recs, -1, nil
}

// lastCheckpointRecord finds the last complete record in a window at the
// end of the checkpoints file (data is the window, base its offset). It
// returns ok=false if the window holds no complete record.
func lastCheckpointRecord(data []byte, base int64) (rec cpRecord, ok bool) {
	// A record starts at the file's start or after an empty line, with a
	// line that is not a signature.
	for end := len(data); end > 0; {
		i := bytes.LastIndex(data[:end], []byte("\n\n"))
		start := i + 2
		if i < 0 {
			if base != 0 {
				return rec, false
			}
			start = 0
		}
		end = max(i, 0)
		if start >= len(data) || bytes.HasPrefix(data[start:], []byte("— ")) {
			if i < 0 {
				return rec, false
			}
			continue
		}
		recs, _, err := splitCheckpoints(data[start:])
		if err == nil && len(recs) > 0 {
			r := recs[len(recs)-1]
			r.end += base + int64(start)
			return r, true
		}
		if i < 0 {
			return rec, false
		}
	}
	return rec, false
}
