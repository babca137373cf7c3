package pgstore

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) {
	if dsn := os.Getenv(helperEnv); dsn != "" {
		os.Exit(migrateProcess(dsn))
	}
	os.Exit(pgtest.Run(m))
}

// helperEnv, when set to a DSN, makes the test binary a stand-in for one
// hearth replica starting: it migrates that database and exits.
const helperEnv = "HEARTH_PGSTORE_MIGRATE_DSN"

func migrateProcess(dsn string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Close()
	done, err := Migrate(ctx, pool)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(len(done))
	return 0
}

// Replicas started at the same moment on an empty database, as separate
// processes: every one migrates without error, hearth's migrations are
// applied once in total, and every table of the schema exists.
func TestMigrateConcurrentProcesses(t *testing.T) {
	const n = 6
	db := pgtest.New(t)
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	cmds := make([]*exec.Cmd, n)
	outs := make([]*strings.Builder, n)
	for i := range cmds {
		cmds[i] = exec.Command(os.Args[0])
		cmds[i].Env = append(os.Environ(), helperEnv+"="+db.DSN)
		outs[i] = &strings.Builder{}
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	applied := 0
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("replica %d: %v: %s", i, err, outs[i])
			continue
		}
		var k int
		fmt.Sscan(outs[i].String(), &k)
		applied += k
	}
	if applied != len(migs) {
		t.Errorf("migrations applied in total = %d, want %d (each once)", applied, len(migs))
	}
	pool := db.Pool(t)
	ctx := context.Background()
	var versions int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM hearth.schema_migrations").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if versions != len(migs) {
		t.Errorf("schema_migrations rows = %d, want %d", versions, len(migs))
	}
	for _, table := range []string{"users", "identities", "recovery_codes", "reset_codes", "access_tokens",
		"refresh_tokens", "lockouts", "devices", "device_certs", "changes", "audit_entries",
		"audit_checkpoints", "audit_sequencer"} {
		var ok bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", Schema+"."+table).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s.%s missing (%v)", Schema, table, err)
		}
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
