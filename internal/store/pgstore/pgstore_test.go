package pgstore

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/storetest"
)

func TestMain(m *testing.M) {
	if dsn := os.Getenv(helperEnv); dsn != "" {
		os.Exit(openProcess(dsn))
	}
	os.Exit(pgtest.Run(m))
}

// helperEnv, when set to a DSN, makes the test binary a stand-in for one
// hearth replica starting: it opens the store on that database (which
// migrates it), writes one record, and exits.
const helperEnv = "HEARTH_PGSTORE_OPEN_DSN"

func openProcess(dsn string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, dsn, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	if err := s.Declare(ctx, "replicas"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := s.Update(ctx, func(tx store.Tx) error {
		return tx.Bucket("replicas").Put([]byte(fmt.Sprint(os.Getpid())), []byte("started"))
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// open opens a Store on db, closed at t.Cleanup.
func open(t testing.TB, db *pgtest.DB, opts Options) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, db.PassfileDSN(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The conformance suite on PostgreSQL: the two handles are two Opens on
// one database, i.e. two replicas with their own pools and feeds.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) (store.Store, store.Store) {
		db := pgtest.New(t)
		return open(t, db, Options{ApplicationName: "hearth-a"}), open(t, db, Options{ApplicationName: "hearth-b"})
	})
}

// Replicas started at the same moment on an empty database, as separate
// processes: every one opens the store (migrating it) and writes without
// error, hearth's migrations are applied once in total, and the tables
// exist.
func TestOpenConcurrentProcesses(t *testing.T) {
	const n = 8
	db := pgtest.New(t)
	d := db.PassfileDSN(t)
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	cmds := make([]*exec.Cmd, n)
	outs := make([]*strings.Builder, n)
	for i := range cmds {
		cmds[i] = exec.Command(os.Args[0])
		cmds[i].Env = append(os.Environ(), helperEnv+"="+d)
		outs[i] = &strings.Builder{}
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("replica %d: %v: %s", i, err, outs[i])
		}
	}
	pool := db.Pool(t)
	ctx := context.Background()
	var versions, started int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM hearth.schema_migrations").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if versions != len(migs) {
		t.Errorf("schema_migrations rows = %d, want %d", versions, len(migs))
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM hearth.kv WHERE bucket = 'replicas'").Scan(&started); err != nil || started != n {
		t.Errorf("records written by the replicas = %d (%v), want %d", started, err, n)
	}
	for _, table := range []string{"buckets", "kv", "changes"} {
		var ok bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", Schema+"."+table).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s.%s missing (%v)", Schema, table, err)
		}
	}
	// The prototype's audit tables are gone (internal/pgaudit keeps the
	// history in its own schema).
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'audit%'", Schema).Scan(&left); err != nil || left != 0 {
		t.Errorf("audit tables left in %s: %d (%v)", Schema, left, err)
	}
}

// migrated returns a fresh database with hearth's schema applied.
func migrated(t *testing.T) (*pgtest.DB, *pgxpool.Pool) {
	t.Helper()
	db := pgtest.New(t)
	pool := db.Pool(t)
	if _, err := Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return db, pool
}
