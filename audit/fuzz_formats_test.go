package audit

import (
	"bytes"
	"crypto/ed25519"
	"testing"

	"filippo.io/torchwood"
)

// FuzzParseFrame: parseFrame never panics, never returns a payload longer
// than its type allows, and what it accepts re-frames to the same bytes;
// the stream reader agrees with it.
func FuzzParseFrame(f *testing.F) {
	f.Add(appendFrame(nil, recEntry, []byte(`{"index":0,"time":"2026-11-25T12:00:01Z","event":"audit.start","outcome":"success"}`)))
	f.Add(appendFrame(nil, recCheckpoint, []byte("o\n1\nAAAA\n\n— o x\n")))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{'E', 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Add([]byte("E\x00\x00\x01abcdx"))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, payload, n, err := parseFrame(b)
		if err != nil {
			return
		}
		if len(payload) > frameLimit(typ) || n != frameHeader+len(payload) || n > len(b) {
			t.Fatalf("parseFrame accepted type %#x with %d bytes in %d", typ, len(payload), n)
		}
		if !bytes.Equal(appendFrame(nil, typ, payload), b[:n]) {
			t.Fatal("an accepted record does not re-frame to its bytes")
		}
		fr := newFrameReader(bytes.NewReader(b))
		rt, rp, rerr := fr.next()
		if rerr != nil || rt != typ || !bytes.Equal(rp, payload) {
			t.Fatalf("frameReader = %#x %q %v; parseFrame %#x %q", rt, rp, rerr, typ, payload)
		}
	})
}

// FuzzParseTilePath: only canonical C2SP tile paths are accepted, and
// they round-trip through torchwood's writer.
func FuzzParseTilePath(f *testing.F) {
	for _, s := range []string{"tile/0/000", "tile/1/x001/234.p/7", "tile/entries/x002/003", "tile/entries/000.p/255",
		"tile/8/data/000", "tile/0/000.p/0", "tile/0/0000", "tile/9/000", "tile/entries/000.p/256", "tile/-1/000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tile, err := parseTilePath(s)
		if err != nil {
			return
		}
		if torchwood.TilePath(tile) != s || tile.W < 1 || tile.W > 256 || tile.L < -1 || tile.L > 7 {
			t.Fatalf("parseTilePath(%q) = %+v", s, tile)
		}
		_ = tileInTree(tile, 1<<40)
	})
}

// FuzzWitnessResponses: the parsers of a witness's answers (200: signature
// lines, 409: a size) never panic and accept only what they should.
func FuzzWitnessResponses(f *testing.F) {
	signer, err := torchwood.NewCosignatureSigner("witness.test/fuzz", fuzzKey())
	if err != nil {
		f.Fatal(err)
	}
	msg := []byte("hearth.home.arpa/audit/0\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— hearth.home.arpa/audit/0 AAAA\n")
	f.Add([]byte("— witness.test/fuzz AAAA\n"), "text/x.tlog.size", []byte("12\n"))
	f.Add([]byte("— a b\n— c d\n"), "text/plain", []byte("012\n"))
	f.Add([]byte("\n"), "text/x.tlog.size; charset=utf-8", []byte("-1"))
	f.Fuzz(func(t *testing.T, body []byte, ctype string, size []byte) {
		if lines, err := parseCosignatures(body, msg, signer.Verifier()); err == nil {
			if !bytes.HasPrefix(lines, []byte("— witness.test/fuzz ")) {
				t.Fatalf("accepted cosignatures %q", lines)
			}
		}
		if n, err := parseConflictSize(ctype, size); err == nil && n < 0 {
			t.Fatalf("size %d", n)
		}
	})
}

func fuzzKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
}
