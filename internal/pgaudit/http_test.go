package pgaudit

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgtest"
)

// TestTilesReadByTorchwood: filippo.io/torchwood, a tlog client this
// project did not write, verifies the checkpoint and reads every entry of
// the PostgreSQL history from the handler's tiles over real HTTP, from
// either replica, and finds each where its Record put it.
func TestTilesReadByTorchwood(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	a := openLog(t, db.Pool(t), dir, Options{Name: "a"})
	b := openLog(t, db.Pool(t), dir, Options{Name: "b"})
	acked, failed := load(t, []*Log{a, b}, 4, 80, nil) // 642 entries: two full entry tiles and a partial one
	if len(failed) > 0 {
		t.Fatal(failed)
	}
	v, err := audit.ParseVerifierKey(a.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, l := range []*Log{a, b} {
		srv := httptest.NewServer(l.Handler())
		resp, err := srv.Client().Get(srv.URL + audit.CheckpointPath)
		if err != nil {
			t.Fatal(err)
		}
		signed, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c, _, err := torchwood.VerifyCheckpoint(signed, torchwood.ThresholdPolicy(2, torchwood.OriginPolicy(l.Origin()), torchwood.SingleVerifierPolicy(v)))
		if err != nil {
			t.Fatalf("torchwood refuses the checkpoint: %v\n%s", err, signed)
		}
		fetcher, err := torchwood.NewTileFetcher(srv.URL+"/.hearth/v1/audit/", torchwood.WithHTTPClient(srv.Client()))
		if err != nil {
			t.Fatal(err)
		}
		client, err := torchwood.NewClient(fetcher)
		if err != nil {
			t.Fatal(err)
		}
		byIndex := map[int64]string{}
		for r, seq := range acked {
			byIndex[seq] = r
		}
		n := int64(0)
		for i, e := range client.AllEntries(ctx, c.Tree, 0) {
			got, err := audit.ParseEntry(e)
			if err != nil || got.Index != i || i != n {
				t.Fatalf("entry %d from the tiles: %s (%v)", i, e, err)
			}
			if r, ok := byIndex[i]; ok && got.Reason != r {
				t.Fatalf("entry %d is %q, Record put %q there", i, got.Reason, r)
			}
			n++
		}
		if err := client.Err(); err != nil || n != c.N || n != int64(len(acked)+2) {
			t.Fatalf("torchwood read %d of %d entries (%d acknowledged + 2): %v", n, c.N, len(acked), err)
		}
		entry, proof, err := client.Entry(ctx, c.Tree, 300)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(proof, c.N, c.Hash, 300, tlog.RecordHash(entry)); err != nil {
			t.Fatalf("inclusion of entry 300: %v", err)
		}
		for path, want := range map[string]int{
			"tile/0/000":       http.StatusOK,
			"tile/entries/001": http.StatusOK,
			"tile/entries/003": http.StatusNotFound, // past the tree
			"tile/0/x001/000":  http.StatusNotFound,
			"tile/entries/00x": http.StatusNotFound,
			"proof?index=1":    http.StatusBadRequest, // no size
			"tile/1/000.p/2":   http.StatusOK,
			"tile/entries/002.p/" + fmt.Sprint(c.N-512): http.StatusOK,
		} {
			resp, err := srv.Client().Get(srv.URL + "/.hearth/v1/audit/" + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
			}
		}
		srv.Close()
	}
}
