//go:build unix

package migrate

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgaudit"
	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/witnesstest"
)

// recordN appends n events to l.
func recordN(t *testing.T, l audit.Recorder, n int, who string) {
	t.Helper()
	for range n {
		if err := l.Record(context.Background(), audit.Event{Name: audit.EventTokenIssue, Outcome: audit.OutcomeSuccess, Principal: "user:" + who}); err != nil {
			t.Fatal(err)
		}
	}
}

// waitWitness waits until status reports the witness at size want (or,
// with refused, a refusal) and returns the last status.
func waitWitness(t *testing.T, status func() []audit.WitnessStatus, want int64, refused bool) audit.WitnessStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := status()
		if len(st) == 1 && ((refused && st[0].Refused) || (!refused && st[0].Size >= want && st[0].Error == "")) {
			return st[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("witness status %+v; want size %d (refused %v)", st, want, refused)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// A witness (torchwood's litewitness) that cosigned the file log before
// the move goes on cosigning the migrated history in PostgreSQL: the
// replicas' sequencer pushes its next checkpoint with a consistency proof
// from the stored hashes, and the witness accepts it as the same history
// extended. A history with the same keys but other entries, migrated the
// same way, is refused by that witness: the check can fail.
func TestMigratedHistoryKeepsItsWitness(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := audit.Init(dir); err != nil {
		t.Fatal(err)
	}
	signer, err := audit.LoadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	url, wkey := witnesstest.Litewitness(t, signer.Origin(), signer.VerifierKey())
	ws := []audit.Witness{{URL: url, Key: wkey}}
	// A second data dir with the same audit log as it is now (keys, empty
	// history), for the forked history.
	fork := t.TempDir()
	copyTree(t, filepath.Join(dir, audit.DirName), filepath.Join(fork, audit.DirName))

	l, err := audit.Open(dir, audit.Config{Witnesses: ws}, audit.Options{WitnessInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	recordN(t, l, 10, "before")
	cosigned := waitWitness(t, l.Witnesses, l.Size(), false)
	l.Close()

	want, err := countAudit(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.New(t).Pool(t)
	if err := copyAudit(ctx, pool, dir, want, func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	pl, err := pgaudit.Open(ctx, pool, dir, pgaudit.Options{Witnesses: ws, WitnessInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	recordN(t, pl, 5, "after")
	latest, _, err := pl.Latest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := waitWitness(t, func() []audit.WitnessStatus { return pl.Witnesses(ctx) }, latest.Size, false)
	if st.Size <= cosigned.Size || st.Refused {
		t.Fatalf("the witness cosigned %d before the move and %+v after; want a larger tree, accepted", cosigned.Size, st)
	}

	// The fork: other entries under the same keys.
	fl, err := audit.Open(fork, audit.Config{}, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	recordN(t, fl, 30, "forked")
	fl.Close()
	fwant, err := countAudit(fork)
	if err != nil {
		t.Fatal(err)
	}
	fpool := pgtest.New(t).Pool(t)
	if err := copyAudit(ctx, fpool, fork, fwant, func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	// The fork's replica keeps the witness state of the real history (as
	// a data dir copied from the first one would).
	copyTree(t, filepath.Join(dir, audit.DirName, audit.WitnessesDir), filepath.Join(fork, audit.DirName, audit.WitnessesDir))
	fpl, err := pgaudit.Open(ctx, fpool, fork, pgaudit.Options{Witnesses: ws, WitnessInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer fpl.Close()
	recordN(t, fpl, 1, "forked")
	waitWitness(t, func() []audit.WitnessStatus { return fpl.Witnesses(ctx) }, 0, true)
}

// copyTree copies the directory src to dst (directories 0700, files 0600).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}
