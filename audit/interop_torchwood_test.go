package audit

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"
)

// TestTorchwoodInterop reads hearth's log with filippo.io/torchwood, a
// tlog client this project did not write, over real HTTP on loopback: it
// verifies the checkpoint against the log's verifier key and origin
// policy, fetches and authenticates every tile to read all entries, and
// checks an inclusion proof and a consistency proof between two sizes.
func TestTorchwoodInterop(t *testing.T) {
	dir := newTestDir(t)
	l := openTest(t, dir, Config{SegmentSize: 64 << 10}, Options{})
	defer l.Close()
	record := func(n int) {
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := g; i < n; i += 8 {
					mustRecord(t, l, testEvent(i))
				}
			})
		}
		wg.Wait()
	}
	record(300)
	oldCP, _ := l.Checkpoint()
	record(500) // past two full entry tiles, over several segments
	srv := httptest.NewServer(l.Handler())
	defer srv.Close()
	ctx := context.Background()

	resp, err := srv.Client().Get(srv.URL + CheckpointPath)
	if err != nil {
		t.Fatal(err)
	}
	signed, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	v, err := ParseVerifierKey(l.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	policy := torchwood.ThresholdPolicy(2, torchwood.OriginPolicy(l.Origin()), torchwood.SingleVerifierPolicy(v))
	c, _, err := torchwood.VerifyCheckpoint(signed, policy)
	if err != nil {
		t.Fatalf("torchwood refuses hearth's checkpoint: %v\n%s", err, signed)
	}
	if cur, _ := l.Checkpoint(); c.N != cur.Size || c.Hash != cur.Hash || c.Origin != l.Origin() || c.Extension != "" {
		t.Fatalf("torchwood read %+v, the log has %+v", c, cur)
	}
	wrong := torchwood.ThresholdPolicy(2, torchwood.OriginPolicy("example.com/other"), torchwood.SingleVerifierPolicy(v))
	if _, _, err := torchwood.VerifyCheckpoint(signed, wrong); err == nil {
		t.Fatal("torchwood accepted the checkpoint under another origin's policy")
	}

	fetcher, err := torchwood.NewTileFetcher(srv.URL+"/.hearth/v1/audit/", torchwood.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	client, err := torchwood.NewClient(fetcher)
	if err != nil {
		t.Fatal(err)
	}
	want, err := l.Read(0, int(c.N))
	if err != nil {
		t.Fatal(err)
	}
	n := int64(0)
	for i, e := range client.AllEntries(ctx, c.Tree, 0) {
		got, err := ParseEntry(e)
		if err != nil || i != n || got.Index != i || got.Resource != want[i].Resource || got.Time != want[i].Time {
			t.Fatalf("entry %d from the tiles: %s (%v); want index %d, %+v", i, e, err, n, want[i])
		}
		n++
	}
	if err := client.Err(); err != nil || n != c.N {
		t.Fatalf("torchwood read %d of %d entries: %v", n, c.N, err)
	}

	// Inclusion of one entry, and consistency of the two sizes, from
	// tiles torchwood authenticated against the checkpoint.
	entry, proof, err := client.Entry(ctx, c.Tree, 345)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckRecord(proof, c.N, c.Hash, 345, tlog.RecordHash(entry)); err != nil {
		t.Fatalf("inclusion of entry 345: %v", err)
	}
	if !bytes.HasPrefix(entry, []byte(`{"index":345,`)) {
		t.Fatalf("entry 345 is %s", entry)
	}
	hr := torchwood.TileHashReaderWithContext(ctx, c.Tree, fetcher)
	tp, err := tlog.ProveTree(c.N, oldCP.Size, hr)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(tp, c.N, c.Hash, oldCP.Size, oldCP.Hash); err != nil {
		t.Fatalf("consistency %d -> %d: %v", oldCP.Size, c.N, err)
	}

	// Tile responses: full tiles cacheable for good, partial ones not, and
	// nothing past the tree.
	for path, want := range map[string]string{
		"tile/0/000":           "private, max-age=31536000, immutable",
		"tile/entries/000":     "private, max-age=31536000, immutable",
		"tile/entries/004.p/1": "",
		"tile/0/x001/000":      "",
		"tile/8/data/000":      "",
	} {
		resp, err := srv.Client().Get(srv.URL + "/.hearth/v1/audit/" + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want == "" {
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != want {
			t.Errorf("GET %s = %d, Cache-Control %q; want 200, %q", path, resp.StatusCode, resp.Header.Get("Cache-Control"), want)
		}
	}
}
