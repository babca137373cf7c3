package audit

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const goodCheckpoint = "hearth audit log v1\nhearth-audit-0123456789abcdef\n42\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"

func TestParseCheckpoint(t *testing.T) {
	c, err := ParseCheckpoint([]byte(goodCheckpoint))
	if err != nil {
		t.Fatalf("ParseCheckpoint(good) = %v", err)
	}
	if c.Size != 42 || c.Origin != "hearth-audit-0123456789abcdef" || string(c.Text()) != goodCheckpoint {
		t.Errorf("ParseCheckpoint(good) = %+v, text %q", c, c.Text())
	}
	repl := func(old, new string) string { return strings.Replace(goodCheckpoint, old, new, 1) }
	bad := []struct{ name, text string }{
		{"empty", ""},
		{"go sumdb header", repl("hearth audit log v1", "go.sum database tree")},
		{"other version", repl("v1", "v2")},
		{"no final newline", strings.TrimSuffix(goodCheckpoint, "\n")},
		{"extra line", goodCheckpoint + "x\n"},
		{"extra empty line", goodCheckpoint + "\n"},
		{"leading zero", repl("\n42\n", "\n042\n")},
		{"plus sign", repl("\n42\n", "\n+42\n")},
		{"negative", repl("\n42\n", "\n-42\n")},
		{"hex size", repl("\n42\n", "\n0x2a\n")},
		{"huge size", repl("\n42\n", "\n99999999999999999999\n")},
		{"empty size", repl("\n42\n", "\n\n")},
		{"space in origin", repl("hearth-audit-0123456789abcdef", "hearth audit")},
		{"plus in origin", repl("hearth-audit-0123456789abcdef", "a+b")},
		{"empty origin", repl("hearth-audit-0123456789abcdef", "")},
		{"short hash", repl("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "47DEQpj8")},
		{"url base64 hash", repl("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=")},
		{"non-canonical hash padding bits", repl("3hSuFU=", "3hSuFV=")},
		{"crlf", strings.ReplaceAll(goodCheckpoint, "\n", "\r\n")},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := ParseCheckpoint([]byte(tt.text)); err == nil {
				t.Errorf("ParseCheckpoint(%q) = %+v, want an error", tt.text, c)
			}
		})
	}
}

func testSigner(t testing.TB) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(testRand(), "hearth-audit-test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func TestOpenCheckpoint(t *testing.T) {
	s, v := testSigner(t)
	c := Checkpoint{Origin: "hearth-audit-test", Size: 3, Hash: tlog.RecordHash([]byte("x"))}
	msg, err := signCheckpoint(c, s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenCheckpoint(msg, note.VerifierList(v))
	if err != nil || got != c {
		t.Fatalf("OpenCheckpoint = %+v, %v; want %+v", got, err, c)
	}
	// Every single-bit change is refused.
	for i := range msg {
		for bit := range 8 {
			m := bytes.Clone(msg)
			m[i] ^= 1 << bit
			if got, err := OpenCheckpoint(m, note.VerifierList(v)); err == nil {
				t.Fatalf("OpenCheckpoint accepted bit %d of byte %d flipped: %+v", bit, i, got)
			}
		}
	}
	// A checkpoint whose origin is not the signer's name is refused.
	other := Checkpoint{Origin: "someone-else", Size: 3}
	msg2, _ := signCheckpoint(other, s)
	if _, err := OpenCheckpoint(msg2, note.VerifierList(v)); err == nil {
		t.Error("OpenCheckpoint accepted a checkpoint whose origin is not its signer")
	}
}

func TestSplitCheckpoints(t *testing.T) {
	s, _ := testSigner(t)
	var file []byte
	for i := int64(1); i <= 3; i++ {
		msg, _ := signCheckpoint(Checkpoint{Origin: "hearth-audit-test", Size: i}, s)
		file = append(append(file, msg...), '\n')
	}
	recs, torn, err := splitCheckpoints(file)
	if err != nil || torn != -1 || len(recs) != 3 || recs[2].end != int64(len(file)) {
		t.Fatalf("splitCheckpoints(3 records) = %d records, torn %d, %v", len(recs), torn, err)
	}
	// Every proper prefix is the complete records before it and a torn tail.
	for n := range len(file) {
		recs, torn, err := splitCheckpoints(file[:n])
		if err != nil {
			t.Fatalf("prefix %d: %v", n, err)
		}
		wantRecs := 0
		for _, r := range []int64{recs2end(file, 0), recs2end(file, 1), recs2end(file, 2)} {
			if int64(n) >= r {
				wantRecs++
			}
		}
		if len(recs) != wantRecs || (torn == -1) != (n == 0 || int64(n) == recs2end(file, wantRecs-1)) {
			t.Fatalf("prefix %d: %d records, torn %d; want %d records", n, len(recs), torn, wantRecs)
		}
	}
	// A complete record of the wrong shape is damage, not a torn tail.
	for _, b := range []string{"hello\n\n", "hearth audit log v1\na\n1\nh\nx\n— s\n\n", "hearth audit log v1\na\n1\nh\n\nnot a sig\n\n", "hearth audit log v1\na\n1\nh\n\n\n"} {
		if _, _, err := splitCheckpoints(append(bytes.Clone(file), b...)); err == nil {
			t.Errorf("splitCheckpoints accepted a malformed record %q", b)
		}
	}
	// lastCheckpointRecord finds the last record from any window that holds
	// it and the empty line before it.
	for start := range recs[2].end - int64(len(recs[2].msg)) - 3 {
		r, ok := lastCheckpointRecord(file[start:], start)
		if !ok || !bytes.Equal(r.msg, recs[2].msg) || r.end != int64(len(file)) {
			t.Fatalf("lastCheckpointRecord(window from %d) = %q, %v", start, r.msg, ok)
		}
	}
	r, ok := lastCheckpointRecord(file[:len(file)-3], 0)
	if !ok || !bytes.Equal(r.msg, recs[1].msg) {
		t.Errorf("lastCheckpointRecord with a torn last record = %q, %v; want the second", r.msg, ok)
	}
}

func recs2end(file []byte, i int) int64 {
	if i < 0 {
		return 0
	}
	recs, _, _ := splitCheckpoints(file)
	return recs[i].end
}

// FuzzParseCheckpoint: what ParseCheckpoint accepts formats back to the
// same bytes.
func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte(goodCheckpoint))
	f.Add([]byte("hearth audit log v1\nx\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"))
	f.Add([]byte("go.sum database tree\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"))
	f.Fuzz(func(t *testing.T, text []byte) {
		c, err := ParseCheckpoint(text)
		if err != nil {
			return
		}
		if got := c.Text(); !bytes.Equal(got, text) {
			t.Fatalf("round trip: %q -> %q", text, got)
		}
	})
}

// FuzzOpenCheckpoints runs the checkpoints-file splitter and the signed
// checkpoint parser on arbitrary bytes: no panic, and every record it
// accepts re-splits to itself.
func FuzzOpenCheckpoints(f *testing.F) {
	s, v := testSigner(f)
	msg, _ := signCheckpoint(Checkpoint{Origin: "hearth-audit-test", Size: 9}, s)
	f.Add(append(bytes.Clone(msg), '\n'))
	f.Add(append(append(bytes.Clone(msg), '\n'), msg[:20]...))
	f.Add([]byte("hearth audit log v1\n\n\n"))
	vs := note.VerifierList(v)
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, torn, err := splitCheckpoints(data)
		if err != nil {
			return
		}
		end := int64(0)
		for _, r := range recs {
			if r.end <= end || !bytes.Equal(data[r.end-int64(len(r.msg))-1:r.end-1], r.msg) {
				t.Fatalf("record ends %d after %d", r.end, end)
			}
			end = r.end
			if c, err := OpenCheckpoint(r.msg, vs); err == nil && !bytes.Contains(r.msg, c.Text()) {
				t.Fatalf("opened checkpoint %+v is not in %q", c, r.msg)
			}
		}
		if torn >= 0 && torn != end {
			t.Fatalf("torn tail at %d, last record ends at %d", torn, end)
		}
	})
}
