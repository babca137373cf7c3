package migrate

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/bolttest"
	"github.com/hearth-home/hearth/internal/pgaudit"
	"github.com/hearth-home/hearth/internal/pgtest"
)

// fileLog makes a file log in dir with n recorded events, from several
// goroutines so that batches (and so checkpoints) cover several entries.
func fileLog(t testing.TB, dir string, n int) {
	t.Helper()
	if err := audit.Init(dir); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(dir, audit.Config{}, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				if err := l.Record(context.Background(), audit.Event{Name: audit.EventTokenIssue, Outcome: audit.OutcomeSuccess, Principal: fmt.Sprintf("user:u%d", i)}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// The file log moves into pgaudit's tables entry by entry at its own index
// with every checkpoint; pgaudit's own Verify then reads the same history
// (entries, checkpoints, tree head, origin), and a second import is
// refused.
func TestCopyAudit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fileLog(t, dir, 300)
	want, err := countAudit(dir)
	if err != nil {
		t.Fatal(err)
	}
	file, _ := audit.Verify(dir, audit.VerifyOptions{})
	if want.Entries != file.Entries || want.Root != file.Root || want.Entries < 300 || want.Checkpoints < 2 || want.Checkpoints != file.Checkpoints {
		t.Fatalf("countAudit = %+v, the file log verifies with %+v", want, file)
	}
	pool := pgtest.New(t).Pool(t)
	var lines []string
	if err := copyAudit(ctx, pool, dir, want, func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }); err != nil {
		t.Fatal(err)
	}
	signer, _ := audit.LoadSigner(dir)
	res, err := pgaudit.Verify(ctx, pool, pgaudit.VerifyOptions{VerifierKey: signer.VerifierKey()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != file.Entries || res.Root != file.Root || res.Checkpoints != file.Checkpoints || res.Origin != file.Origin {
		t.Fatalf("pgaudit.Verify = %+v, the file log %+v", res, file)
	}
	if len(lines) == 0 {
		t.Error("no progress reported")
	}
	if err := copyAudit(ctx, pool, dir, want, func(string, ...any) {}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("second import = %v, want ErrNotEmpty", err)
	}
	// A replica continues the same history: its sequencer appends after
	// the imported entries and everything verifies.
	l, err := pgaudit.Open(ctx, pool, dir, pgaudit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ctx, audit.Event{Name: audit.EventTokenIssue, Outcome: audit.OutcomeSuccess, Principal: "user:after"}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	res, err = pgaudit.Verify(ctx, pool, pgaudit.VerifyOptions{VerifierKey: signer.VerifierKey()})
	if err != nil || res.Entries < file.Entries+1 {
		t.Fatalf("after a replica's append: %+v, %v; want more than %d entries", res, err, file.Entries)
	}
	if err := clearAudit(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if res, err := pgaudit.Verify(ctx, pool, pgaudit.VerifyOptions{VerifierKey: signer.VerifierKey()}); err != nil || res.Entries != 0 {
		t.Fatalf("after clearAudit: %+v, %v", res, err)
	}
}

// A log open for writing (a running server) is refused; once closed, the
// shared lock keeps a writer from opening it.
func TestAuditLockShared(t *testing.T) {
	dir := t.TempDir()
	if err := audit.Init(dir); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(dir, audit.Config{}, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.LockShared(dir); !errors.Is(err, audit.ErrWriterRunning) {
		t.Fatalf("LockShared while open = %v, want ErrWriterRunning", err)
	}
	bolttest.Write(t, filepath.Join(dir, StoreFile), nil)
	if _, err := openSource(dir, 0); !errors.Is(err, ErrServed) {
		t.Fatalf("openSource while the log is open = %v, want ErrServed", err)
	}
	l.Close()
	c, err := audit.LockShared(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Open(dir, audit.Config{}, audit.Options{}); !errors.Is(err, audit.ErrLocked) {
		t.Fatalf("Open under the shared lock = %v, want ErrLocked", err)
	}
	c.Close()
}
