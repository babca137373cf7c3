package pgmigrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

func files(kv ...string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for i := 0; i < len(kv); i += 2 {
		fsys["m/"+kv[i]] = &fstest.MapFile{Data: []byte(kv[i+1])}
	}
	return fsys
}

func load(t *testing.T, fsys fstest.MapFS) []Migration {
	t.Helper()
	migs, err := Load(fsys, "m")
	if err != nil {
		t.Fatal(err)
	}
	return migs
}

var base = files(
	"0002_items.sql", "CREATE TABLE items (id bigint PRIMARY KEY REFERENCES owners(id)); CREATE INDEX items_id ON items (id);",
	"0001_owners.sql", "CREATE TABLE owners (id bigint PRIMARY KEY);",
)

func versions(t *testing.T, pool *pgxpool.Pool, schema string) []int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT version FROM "+schema+".schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestLoadRejectsBadNames(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"no version":        files("owners.sql", "SELECT 1"),
		"zero version":      files("0000_owners.sql", "SELECT 1"),
		"upper-case name":   files("0001_Owners.sql", "SELECT 1"),
		"not .sql":          files("0001_owners.txt", "SELECT 1"),
		"duplicate version": files("0001_a.sql", "SELECT 1", "01_b.sql", "SELECT 1"),
	} {
		if migs, err := Load(fsys, "m"); err == nil {
			t.Errorf("%s: Load = %v, nil; want an error", name, migs)
		}
	}
}

// Migrations apply in version order (0002 needs 0001's table), each once.
func TestRunAppliesInOrderOnce(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t).Pool(t)
	migs := load(t, base)
	done, err := Run(ctx, pool, "hearth", migs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(done, []int64{1, 2}) {
		t.Errorf("first Run applied %v, want [1 2]", done)
	}
	done, err = Run(ctx, pool, "hearth", migs)
	if err != nil || len(done) != 0 {
		t.Errorf("second Run = %v, %v; want nothing applied", done, err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO hearth.owners VALUES (1); INSERT INTO hearth.items VALUES (1)"); err != nil {
		t.Errorf("tables not in schema hearth: %v", err)
	}
}

// A failing migration leaves nothing of itself behind; earlier ones stay.
func TestRunFailedMigrationRollsBack(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t).Pool(t)
	bad := files(
		"0001_owners.sql", "CREATE TABLE owners (id bigint PRIMARY KEY);",
		"0002_half.sql", "CREATE TABLE half (id int); SELECT no_such_function();",
	)
	done, err := Run(ctx, pool, "hearth", load(t, bad))
	if err == nil || !strings.Contains(err.Error(), "0002_half.sql") {
		t.Fatalf("Run = %v, %v; want an error naming 0002_half.sql", done, err)
	}
	if !slices.Equal(done, []int64{1}) || !slices.Equal(versions(t, pool, "hearth"), []int64{1}) {
		t.Errorf("applied %v, recorded %v; want [1] and [1]", done, versions(t, pool, "hearth"))
	}
	var n int
	pool.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'hearth' AND tablename = 'half'").Scan(&n)
	if n != 0 {
		t.Errorf("table of the failed migration exists")
	}
}

func TestRunRefusesNewerOrChangedSchema(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t).Pool(t)
	if _, err := Run(ctx, pool, "hearth", load(t, base)); err != nil {
		t.Fatal(err)
	}
	older := files("0001_owners.sql", "CREATE TABLE owners (id bigint PRIMARY KEY);")
	if _, err := Run(ctx, pool, "hearth", load(t, older)); !errors.Is(err, ErrNewerSchema) {
		t.Errorf("Run with fewer migrations than applied = %v, want ErrNewerSchema", err)
	}
	edited := files(
		"0001_owners.sql", "CREATE TABLE owners (id bigint PRIMARY KEY, name text);",
		"0002_items.sql", "CREATE TABLE items (id bigint PRIMARY KEY REFERENCES owners(id)); CREATE INDEX items_id ON items (id);",
		"0003_more.sql", "CREATE TABLE more (id int);",
	)
	if _, err := Run(ctx, pool, "hearth", load(t, edited)); !errors.Is(err, ErrChanged) {
		t.Errorf("Run with an edited applied migration = %v, want ErrChanged", err)
	}
	if !slices.Equal(versions(t, pool, "hearth"), []int64{1, 2}) {
		t.Errorf("a refused Run applied something: %v", versions(t, pool, "hearth"))
	}
}

// Replicas starting at once on an empty database, each on its own
// connection: every one succeeds, the migrations are applied exactly once
// in total, and the schema is complete.
func TestRunConcurrentStart(t *testing.T) {
	const n = 8
	ctx := context.Background()
	db := pgtest.New(t)
	migs := load(t, base)
	pools := make([]*pgxpool.Pool, n)
	for i := range pools {
		pools[i] = db.Pool(t)
		if err := pools[i].Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	type res struct {
		done []int64
		err  error
	}
	out := make(chan res, n)
	start := make(chan struct{})
	for _, p := range pools {
		go func() {
			<-start
			d, err := Run(ctx, p, "hearth", migs)
			out <- res{d, err}
		}()
	}
	close(start)
	var all []int64
	for range n {
		r := <-out
		if r.err != nil {
			t.Error(r.err)
		}
		all = append(all, r.done...)
	}
	slices.Sort(all)
	if !slices.Equal(all, []int64{1, 2}) {
		t.Errorf("applied in total %v, want [1 2] once each", all)
	}
	if got := fmt.Sprint(versions(t, pools[0], "hearth")); got != "[1 2]" {
		t.Errorf("recorded versions %s, want [1 2]", got)
	}
}
