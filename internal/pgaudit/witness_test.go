//go:build unix

package pgaudit

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/witnesstest"
)

// TestWitnessCosignsStoredCheckpoints: torchwood's litewitness cosigns
// the checkpoints the sequencer replica pushes, consistency proofs from
// the stored hashes included; after the sequencer is closed, the other
// replica takes over and goes on pushing to the same witness.
func TestWitnessCosignsStoredCheckpoints(t *testing.T) {
	db := pgtest.New(t)
	dir := keysDir(t)
	signer, err := audit.LoadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	url, wkey := witnesstest.Litewitness(t, signer.Origin(), signer.VerifierKey())
	ws := []audit.Witness{{URL: url, Key: wkey}}
	// Two replicas, each with its own data dir holding the same keys.
	dirB := t.TempDir()
	if err := os.Mkdir(filepath.Join(dirB, "audit"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{audit.SigningKeyFile, audit.VerifierKeyFile, audit.HMACKeyFile} {
		b, err := os.ReadFile(filepath.Join(dir, "audit", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirB, "audit", f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts := Options{Witnesses: ws, WitnessInterval: 50 * time.Millisecond}
	opts.Name = "a"
	a := openLog(t, db.Pool(t), dir, opts)
	waitCosigned := func(l *Log, ldir string) audit.Checkpoint {
		t.Helper()
		ctx := context.Background()
		deadline := time.Now().Add(15 * time.Second)
		for {
			cp, _, err := l.Latest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st := l.Witnesses(ctx)
			if len(st) == 1 && st[0].Size == cp.Size && st[0].Error == "" {
				// The kept note carries the log's signature and the
				// witness's cosignature on the stored checkpoint.
				files, _ := filepath.Glob(filepath.Join(ldir, "audit", "witnesses", "*.note"))
				if len(files) != 1 {
					t.Fatalf("kept cosignatures: %v", files)
				}
				b, err := os.ReadFile(files[0])
				if err != nil {
					t.Fatal(err)
				}
				wv, err := torchwood.NewCosignatureVerifier(wkey)
				if err != nil {
					t.Fatal(err)
				}
				n, err := note.Open(b, note.VerifierList(signer.Verifier(), wv))
				if err != nil || len(n.Sigs) != 2 || n.Text != string(cp.Text()) {
					t.Fatalf("kept note %q: %v", b, err)
				}
				return cp
			}
			if time.Now().After(deadline) {
				t.Fatalf("the witness did not cosign size %d: %+v", cp.Size, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for i := range 5 {
		if err := a.Record(context.Background(), event(strings.Repeat("x", i+1))); err != nil {
			t.Fatal(err)
		}
	}
	first := waitCosigned(a, dir)
	opts.Name = "b"
	b := openLog(t, db.Pool(t), dirB, opts)
	a.Close() // b's candidate takes over, and with it the pushes
	for i := range 5 {
		if err := b.Record(context.Background(), event(strings.Repeat("y", i+1))); err != nil {
			t.Fatal(err)
		}
	}
	second := waitCosigned(b, dirB)
	if second.Size <= first.Size {
		t.Fatalf("cosigned %d then %d", first.Size, second.Size)
	}
	mustVerify(t, db.Pool(t))
}
