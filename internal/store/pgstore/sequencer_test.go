package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// testSigner signs checkpoints as signed notes (the text is a stand-in for
// the audit package's checkpoint format).
type testSigner struct {
	signer   note.Signer
	verifier note.Verifier
}

func newTestSigner(t testing.TB) *testSigner {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "hearth-test")
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
	return &testSigner{s, v}
}

func checkpointText(size int64, root tlog.Hash) string {
	return fmt.Sprintf("hearth-test\n%d\n%s\n", size, base64.StdEncoding.EncodeToString(root[:]))
}

func (s *testSigner) sign(size int64, root tlog.Hash) (string, error) {
	b, err := note.Sign(&note.Note{Text: checkpointText(size, root)}, s.signer)
	return string(b), err
}

func enqueue(t *testing.T, pool *pgxpool.Pool, body string) int64 {
	t.Helper()
	ctx := context.Background()
	var id int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
		id, err = EnqueueAudit(ctx, tx, []byte(body))
		return err
	})
	if err != nil {
		t.Error(err)
	}
	return id
}

// running is a Sequencer.Run in the background.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func runSequencer(t *testing.T, s *Sequencer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() { r.err = s.Run(ctx); close(r.done) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop cancels Run and returns its result.
func (r *running) stop() error { r.cancel(); <-r.done; return r.err }

// exited waits up to d for Run to return by itself and returns its result.
func (r *running) exited(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(d):
		t.Fatalf("sequencer still running after %s", d)
		return nil
	}
}

// verifyHistory checks the whole audit history in the database: every
// entry sequenced, positions 0..n-1 without gap or repeat, every
// checkpoint's signature, and every checkpoint's root equal to the tree
// hash of the entries before its size, recomputed here from the bodies.
func verifyHistory(t *testing.T, pool *pgxpool.Pool, s *testSigner, wantEntries int) {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, "SELECT seq, body FROM hearth.audit_entries ORDER BY seq NULLS LAST")
	if err != nil {
		t.Fatal(err)
	}
	var bodies [][]byte
	for rows.Next() {
		var seq *int64
		var b []byte
		if err := rows.Scan(&seq, &b); err != nil {
			t.Fatal(err)
		}
		if seq == nil {
			t.Fatalf("entry %q never sequenced", b)
		}
		if *seq != int64(len(bodies)) {
			t.Fatalf("entry at position %d, want %d", *seq, len(bodies))
		}
		bodies = append(bodies, b)
	}
	if len(bodies) != wantEntries {
		t.Fatalf("%d entries in the history, want %d", len(bodies), wantEntries)
	}
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	roots := map[int64]tlog.Hash{}
	for i, b := range bodies {
		hs, err := tlog.StoredHashes(int64(i), b, reader)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		roots[int64(i+1)], _ = tlog.TreeHash(int64(i+1), reader)
	}
	crows, err := pool.Query(ctx, "SELECT size, root, note FROM hearth.audit_checkpoints ORDER BY size")
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	for crows.Next() {
		var size int64
		var root []byte
		var text string
		if err := crows.Scan(&size, &root, &text); err != nil {
			t.Fatal(err)
		}
		n, err := note.Open([]byte(text), note.VerifierList(s.verifier))
		if err != nil {
			t.Fatalf("checkpoint %d: %v", size, err)
		}
		if want := roots[size]; tlog.Hash(root) != want || n.Text != checkpointText(size, want) {
			t.Fatalf("checkpoint %d: root %x, text %q; recomputed root %x", size, root, n.Text, want)
		}
		last = size
	}
	if last != int64(len(bodies)) {
		t.Fatalf("latest checkpoint covers %d entries, want %d", last, len(bodies))
	}
}

// Writers on two replicas' pools each add entries in their own
// transactions and wait for them: each gets a distinct position, and the
// history verifies.
func TestSequencerOrdersEveryEntryOnce(t *testing.T) {
	const writers, each = 8, 40
	db, poolA := migrated(t)
	poolB := db.Pool(t)
	signer := newTestSigner(t)
	runSequencer(t, &Sequencer{Pool: poolA, Sign: signer.sign, Name: "a"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	writeAndWait(t, []*pgxpool.Pool{poolA, poolB}, writers, each, "", map[int64]bool{}, func(pool *pgxpool.Pool, id int64) (int64, error) {
		return WaitAudited(ctx, pool, id)
	})
	verifyHistory(t, poolA, signer, writers*each)
}

// writeAndWait has writers goroutines, on the pools in turn, each enqueue
// each entries (named with label) and wait for them, and checks that no
// position is given twice (positions carries over between calls).
func writeAndWait(t *testing.T, pools []*pgxpool.Pool, writers, each int, label string, positions map[int64]bool, wait func(*pgxpool.Pool, int64) (int64, error)) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pool := pools[w%len(pools)]
			for i := range each {
				seq, err := wait(pool, enqueue(t, pool, fmt.Sprintf("%swriter %d entry %d", label, w, i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if positions[seq] {
					t.Errorf("position %d given twice", seq)
				}
				positions[seq] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// The sequencer dies (its connection is terminated) while signing a batch:
// the batch rolls back, the waiting standby takes over with a higher epoch
// and sequences every entry, and the history verifies; waiters see their
// entries audited only after the takeover.
func TestSequencerDiesMidBatch(t *testing.T) {
	const entries = 20
	db, pool := migrated(t)
	signer := newTestSigner(t)
	signing := make(chan struct{})
	release := make(chan struct{})
	var first sync.Once
	blocked := func(size int64, root tlog.Hash) (string, error) {
		first.Do(func() { close(signing); <-release })
		return signer.sign(size, root)
	}
	a := runSequencer(t, &Sequencer{Pool: pool, Sign: blocked, Name: "a"})
	ids := make([]int64, entries)
	for i := range ids {
		ids[i] = enqueue(t, pool, fmt.Sprintf("entry %d", i))
	}
	select {
	case <-signing:
	case <-time.After(30 * time.Second):
		t.Fatal("sequencer a never started a batch")
	}
	runSequencer(t, &Sequencer{Pool: db.Pool(t), Sign: signer.sign, Name: "b"})
	ctx := context.Background()
	admin := db.Admin(t)
	var killed int
	if err := admin.QueryRow(ctx, "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"+
		" WHERE l.locktype = 'advisory' AND l.granted AND a.datname = $1 AND a.application_name = $2", db.Name, SequencerApplicationName).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d lock-holding sequencers, want 1", killed)
	}
	close(release)
	if err := a.exited(t, 30*time.Second); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("sequencer a's Run = %v after its connection was killed; want a connection error", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, id := range ids {
		if _, err := WaitAudited(wctx, pool, id); err != nil {
			t.Fatal(err)
		}
	}
	verifyHistory(t, pool, signer, entries)
	var epochs []string
	rows, _ := pool.Query(ctx, "SELECT DISTINCT epoch::text FROM hearth.audit_checkpoints")
	for rows.Next() {
		var e string
		rows.Scan(&e)
		epochs = append(epochs, e)
	}
	if strings.Join(epochs, ",") != "2" {
		t.Errorf("checkpoints written in epochs %v, want only 2 (a's batch rolled back)", epochs)
	}
}

// A sequencer whose epoch has been superseded while it still holds its
// connection (a forced takeover) appends nothing more: its next batch
// finds the fencing row moved on and Run returns ErrFenced.
func TestSequencerFenced(t *testing.T) {
	_, pool := migrated(t)
	signer := newTestSigner(t)
	a := runSequencer(t, &Sequencer{Pool: pool, Sign: signer.sign, Name: "a", Idle: 20 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := WaitAudited(ctx, pool, enqueue(t, pool, "before")); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE hearth.audit_sequencer SET epoch = epoch + 1, holder = 'someone else'"); err != nil {
		t.Fatal(err)
	}
	after := enqueue(t, pool, "after")
	if err := a.exited(t, 10*time.Second); !errors.Is(err, ErrFenced) {
		t.Fatalf("fenced sequencer's Run = %v, want ErrFenced", err)
	}
	var seq *int64
	if err := pool.QueryRow(ctx, "SELECT seq FROM hearth.audit_entries WHERE id = $1", after).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	if seq != nil {
		t.Errorf("a fenced sequencer appended entry %d at %d", after, *seq)
	}
}
