package migrate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/internal/bolttest"
	"github.com/hearth-home/hearth/internal/pgaudit"
	"github.com/hearth-home/hearth/internal/pgtest"
)

// dataDir makes an embedded data dir's stores: hearth.db and ca/db with
// records, and an audit log with entries.
func dataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bolttest.Write(t, filepath.Join(dir, StoreFile), sample)
	if err := os.Mkdir(filepath.Join(dir, "ca"), 0o700); err != nil {
		t.Fatal(err)
	}
	bolttest.Write(t, filepath.Join(dir, CADBFile), map[string]map[string]string{"x509_certs": {"01": "cert"}, "used_ott": {"jti": "t"}})
	fileLog(t, dir, 40)
	return dir
}

// When the last area fails (here: the database refuses audit entries, a
// trigger standing in for a full disk), the areas already copied are
// emptied again: the target holds no hearth data, and once the fault is
// gone the same migration succeeds.
func TestRunUndoesEarlierAreas(t *testing.T) {
	ctx := context.Background()
	dir := dataDir(t)
	pdb := pgtest.New(t)
	pool := pdb.Pool(t)
	dsn := pdb.PassfileDSN(t)
	if err := pgaudit.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE FUNCTION hearth_audit.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON hearth_audit.entries FOR EACH ROW EXECUTE FUNCTION hearth_audit.refuse()`); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, Options{From: dir, To: dsn})
	if err == nil || !strings.Contains(err.Error(), "No space left") {
		t.Fatalf("Run with a failing audit import = %v, want the database's error", err)
	}
	if rep == nil || rep.Moved {
		t.Fatalf("report = %+v", rep)
	}
	holds, err := targetHolds(ctx, pool)
	if err != nil || len(holds) != 0 {
		t.Fatalf("after the failed migration the target holds %v (%v), want nothing", holds, err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM hearth.kv").Scan(&n); err != nil || n != 0 {
		t.Fatalf("hearth.kv has %d rows (%v), want 0: the store copy was not undone", n, err)
	}
	if _, err := pool.Exec(ctx, "DROP TRIGGER refuse ON hearth_audit.entries"); err != nil {
		t.Fatal(err)
	}
	rep, err = Run(ctx, Options{From: dir, To: dsn})
	if err != nil || !rep.Moved || rep.Store.Records() != 5 || rep.CA.Records() != 2 || rep.Audit.Entries < 40 {
		t.Fatalf("Run after the fault = %+v, %v", rep, err)
	}
	if _, err := Run(ctx, Options{From: dir, To: dsn}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("a second Run = %v, want ErrNotEmpty", err)
	}
}

// A DSN with a password is refused before anything is opened.
func TestRunRefusesPasswordDSN(t *testing.T) {
	dir := dataDir(t)
	if _, err := Run(context.Background(), Options{From: dir, To: "postgres://u:secret@127.0.0.1/db"}); err == nil || !strings.Contains(err.Error(), "passfile") {
		t.Fatalf("Run with a password in the DSN = %v, want a refusal naming passfile", err)
	}
}

// Each of the source's databases held by a writer (as `hearth serve`
// holds them: bbolt's exclusive flock) makes the migration refuse, naming
// the file and what to do.
func TestOpenSourceRefusesHeldDatabases(t *testing.T) {
	dir := dataDir(t)
	for _, f := range []string{StoreFile, CADBFile} {
		db, err := bbolt.Open(filepath.Join(dir, f), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = openSource(dir, 0)
		db.Close()
		if !errors.Is(err, ErrServed) || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), "stop `hearth serve` first") {
			t.Errorf("openSource with %s held = %v, want ErrServed naming it", f, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the refusal took %v", d)
		}
	}
	s, err := openSource(dir, 0)
	if err != nil {
		t.Fatalf("openSource with nothing held = %v", err)
	}
	s.close()
}
