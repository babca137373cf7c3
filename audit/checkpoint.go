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

// CheckpointHeader is the first line of every checkpoint text. It names the
// format and its version; tlog.FormatTree is not used because it writes the
// Go checksum database's header.
const CheckpointHeader = "hearth audit log v1"

// Checkpoint is the state of the log at one size: the RFC 6962 Merkle tree
// hash of its first Size entries. Its text form, which the log signs as a
// note (golang.org/x/mod/sumdb/note, Ed25519), is exactly four lines:
//
//	hearth audit log v1
//	<origin>
//	<size, canonical decimal>
//	<root hash, standard base64>
type Checkpoint struct {
	// Origin names the log; it is also the name of the log's signing key.
	Origin string
	Size   int64
	Hash   tlog.Hash
}

// Text returns the checkpoint's text, the message that is signed.
func (c Checkpoint) Text() []byte {
	b := make([]byte, 0, 128)
	b = append(b, CheckpointHeader+"\n"...)
	b = append(b, c.Origin...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, c.Size, 10)
	b = append(b, '\n')
	b = append(b, c.Hash.String()...)
	return append(b, '\n')
}

// ErrMalformedCheckpoint is wrapped by the errors of ParseCheckpoint.
var ErrMalformedCheckpoint = errors.New("audit: malformed checkpoint")

// ParseCheckpoint parses a checkpoint text strictly: the four lines exactly,
// each ending in a newline, nothing after; a valid origin; a size in
// canonical decimal (no sign, no leading zero); a hash in canonical
// standard base64 of exactly 32 bytes.
func ParseCheckpoint(text []byte) (Checkpoint, error) {
	var c Checkpoint
	lines := bytes.SplitAfter(text, []byte("\n"))
	if len(lines) != 5 || len(lines[4]) != 0 {
		return c, fmt.Errorf("%w: want exactly four lines", ErrMalformedCheckpoint)
	}
	for i := range 4 {
		lines[i] = lines[i][:len(lines[i])-1]
	}
	if string(lines[0]) != CheckpointHeader {
		return c, fmt.Errorf("%w: first line is not %q", ErrMalformedCheckpoint, CheckpointHeader)
	}
	if !validOrigin(string(lines[1])) {
		return c, fmt.Errorf("%w: bad origin", ErrMalformedCheckpoint)
	}
	size, ok := parseCanonicalInt(string(lines[2]))
	if !ok {
		return c, fmt.Errorf("%w: size is not a canonical decimal", ErrMalformedCheckpoint)
	}
	h, ok := parseCanonicalHash(string(lines[3]))
	if !ok {
		return c, fmt.Errorf("%w: hash is not canonical base64 of 32 bytes", ErrMalformedCheckpoint)
	}
	return Checkpoint{Origin: string(lines[1]), Size: size, Hash: h}, nil
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

// The checkpoints file holds every signed checkpoint in order, each note
// followed by one empty line:
//
//	hearth audit log v1\n<origin>\n<size>\n<hash>\n\n— <key name> <sig>\n\n
//
// A record that ends before its final empty line is a torn tail (a crash
// while appending); a complete record that does not have this shape is
// damage.

// cpRecord is one record of the checkpoints file.
type cpRecord struct {
	msg []byte // the signed note, without the separating empty line
	end int64  // offset just past the record, separator included
}

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
		for k := 0; k < 4 && complete && bad == ""; k++ {
			l, ok := line()
			if !ok {
				complete = false
			} else if k == 0 && string(l) != CheckpointHeader {
				bad = "does not start with the checkpoint header"
			}
		}
		if complete && bad == "" {
			if l, ok := line(); !ok {
				complete = false
			} else if len(l) != 0 {
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
	hdr := []byte(CheckpointHeader + "\n")
	for end := len(data); end > 0; {
		i := bytes.LastIndex(data[:end], hdr)
		if i < 0 {
			return rec, false
		}
		end = i
		if base+int64(i) != 0 && (i < 2 || data[i-1] != '\n' || data[i-2] != '\n') {
			continue
		}
		recs, _, err := splitCheckpoints(data[i:])
		if err != nil || len(recs) == 0 {
			continue
		}
		r := recs[len(recs)-1]
		r.end += base + int64(i)
		return r, true
	}
	return rec, false
}
