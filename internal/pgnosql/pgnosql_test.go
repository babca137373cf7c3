package pgnosql

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/hearth-home/hearth/internal/pgtest"
	smalldb "github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
	"go.etcd.io/bbolt"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// open returns n handles on one fresh database, as n replicas would hold.
func open(t *testing.T, n int) []*DB {
	t.Helper()
	pdb := pgtest.New(t)
	out := make([]*DB, n)
	for i := range out {
		db, err := Open(pdb.DSN, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		out[i] = db
	}
	return out
}

func openBolt(t *testing.T) database.DB {
	t.Helper()
	db, err := nosql.New(nosql.BBoltDriver, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// outcome is what one nosql call did, in a form both drivers can be
// compared on.
type outcome struct {
	val      string
	swapped  bool
	notFound bool
	err      bool
}

func result(v []byte, swapped bool, err error) outcome {
	return outcome{val: string(v), swapped: swapped, notFound: errors.Is(err, database.ErrNotFound), err: err != nil}
}

func got(v []byte, err error) outcome { return result(v, false, err) }

// The nosql contract as smallstep's bbolt driver (hearth's default) keeps
// it: the same calls on bbolt and on PostgreSQL give the same results.
func TestBehavesLikeBolt(t *testing.T) {
	b := []byte("t")
	k := func(s string) []byte { return []byte(s) }
	steps := []struct {
		name string
		do   func(db database.DB) outcome
	}{
		{"get from a missing table", func(db database.DB) outcome { return got(db.Get(k("nope"), k("a"))) }},
		{"list a missing table", func(db database.DB) outcome { _, err := db.List(k("nope")); return result(nil, false, err) }},
		{"create table", func(db database.DB) outcome { return result(nil, false, db.CreateTable(b)) }},
		{"create table again", func(db database.DB) outcome { return result(nil, false, db.CreateTable(b)) }},
		{"get a missing key", func(db database.DB) outcome { return got(db.Get(b, k("a"))) }},
		{"swap from nil on a missing key", func(db database.DB) outcome { return result(db.CmpAndSwap(b, k("a"), nil, k("1"))) }},
		{"get after swap", func(db database.DB) outcome { return got(db.Get(b, k("a"))) }},
		{"swap from nil on a present key", func(db database.DB) outcome { return result(db.CmpAndSwap(b, k("a"), nil, k("2"))) }},
		{"swap from a wrong value", func(db database.DB) outcome { return result(db.CmpAndSwap(b, k("a"), k("x"), k("2"))) }},
		{"swap from a wrong value on a missing key", func(db database.DB) outcome { return result(db.CmpAndSwap(b, k("m"), k("x"), k("2"))) }},
		{"swap from the right value", func(db database.DB) outcome { return result(db.CmpAndSwap(b, k("a"), k("1"), k("2"))) }},
		{"get after second swap", func(db database.DB) outcome { return got(db.Get(b, k("a"))) }},
		{"set an empty value", func(db database.DB) outcome { return result(nil, false, db.Set(b, k("e"), []byte{})) }},
		{"swap from nil on an empty value", func(db database.DB) outcome { return result(db.CmpAndSwap(b, k("e"), nil, k("3"))) }},
		{"set", func(db database.DB) outcome { return result(nil, false, db.Set(b, k("c"), k("v"))) }},
		{"list in key order", func(db database.DB) outcome {
			es, err := db.List(b)
			var s string
			for _, e := range es {
				s += fmt.Sprintf("%s=%s/%s;", e.Bucket, e.Key, e.Value)
			}
			return result([]byte(s), false, err)
		}},
		{"delete", func(db database.DB) outcome { return result(nil, false, db.Del(b, k("c"))) }},
		{"delete a missing key", func(db database.DB) outcome { return result(nil, false, db.Del(b, k("c"))) }},
		{"get a deleted key", func(db database.DB) outcome { return got(db.Get(b, k("c"))) }},
		{"update: set then get a missing key rolls back", func(db database.DB) outcome {
			tx := &database.Tx{}
			tx.Set(b, k("r"), k("v"))
			tx.Get(b, k("missing"))
			return result(nil, false, db.Update(tx))
		}},
		{"get after rolled back update", func(db database.DB) outcome { return got(db.Get(b, k("r"))) }},
		{"update: get, delete, swap", func(db database.DB) outcome {
			tx := &database.Tx{}
			tx.Get(b, k("a"))
			tx.Del(b, k("a"))
			tx.Operations = append(tx.Operations, &database.TxEntry{Bucket: b, Key: k("n"), Value: k("9"), Cmd: database.CmpAndSwap})
			err := db.Update(tx)
			return result(append(tx.Operations[0].Result, tx.Operations[2].Result...), tx.Operations[2].Swapped, err)
		}},
		{"get after update", func(db database.DB) outcome { return got(db.Get(b, k("n"))) }},
		{"delete table", func(db database.DB) outcome { return result(nil, false, db.DeleteTable(b)) }},
		{"delete a missing table", func(db database.DB) outcome { return result(nil, false, db.DeleteTable(b)) }},
	}
	bolt, pg := openBolt(t), open(t, 1)[0]
	for _, s := range steps {
		want, got := s.do(bolt), s.do(pg)
		if got != want {
			t.Errorf("%s: PostgreSQL gave %+v, bbolt %+v", s.name, got, want)
		}
	}
}

// smallstep's tables are created in their own schema, not in public.
func TestTablesInOwnSchema(t *testing.T) {
	pdb := pgtest.New(t)
	db, err := Open(pdb.DSN, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := NewAuthDB(db); err != nil {
		t.Fatal(err)
	}
	rows, err := pdb.Pool(t).Query(t.Context(), "SELECT table_schema, count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') GROUP BY 1")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		got[s] = n
	}
	if len(got) != 1 || got[DefaultSchema] != len(authTables) {
		t.Errorf("tables per schema = %v, want only %s: %d", got, DefaultSchema, len(authTables))
	}
}

// The tables NewAuthDB creates are the buckets smallstep's own db.New gives
// its bbolt database, so that a certificates upgrade that adds a table is
// noticed here.
func TestAuthDBTablesMatchSmallstep(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	sdb, err := smalldb.New(&smalldb.Config{Type: "bbolt", DataSource: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := sdb.Shutdown(); err != nil {
		t.Fatal(err)
	}
	bdb, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	var got []string
	bdb.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bbolt.Bucket) error { got = append(got, string(name)); return nil })
	})
	want := append([]string(nil), authTables...)
	sort.Strings(got)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("smallstep's db.New creates %v; NewAuthDB creates %v", got, want)
	}
}

// Replicas starting at once on an empty database all create the schema and
// smallstep's tables without error (concurrent CREATE … IF NOT EXISTS
// alone fails with 23505).
func TestConcurrentStartOnEmptyDatabase(t *testing.T) {
	pdb := pgtest.New(t)
	const n = 8
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		go func() {
			<-start
			db, err := Open(pdb.DSN, "")
			if err == nil {
				_, err = NewAuthDB(db)
				db.Close()
			}
			errs <- err
		}()
	}
	close(start)
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// Compare-and-swap from nil (a key's first write) and from a value, with
// many racers on several handles: exactly one winner every time, and the
// stored value is the winner's.
func TestCmpAndSwapRace(t *testing.T) {
	const racers, trials = 8, 300
	dbs := open(t, 4)
	table := []byte("race")
	if err := dbs[0].CreateTable(table); err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"", "old"} {
		t.Run("from="+from, func(t *testing.T) {
			var winner sync.Map
			var old []byte
			if from != "" {
				old = []byte(from)
			}
			setup := func(trial int) {
				if old != nil {
					if err := dbs[0].Set(table, fmt.Appendf(nil, "%s-%d", from, trial), old); err != nil {
						t.Fatal(err)
					}
				}
			}
			wins := pgtest.Race(racers, trials, setup, func(trial, r int) bool {
				db := dbs[r%len(dbs)]
				key := fmt.Appendf(nil, "%s-%d", from, trial)
				mine := fmt.Appendf(nil, "racer-%d", r)
				_, ok, err := db.CmpAndSwap(table, key, old, mine)
				if err != nil {
					t.Error(err)
				}
				if ok {
					winner.Store(trial, mine)
				}
				return ok
			})
			for trial, n := range wins {
				if n != 1 {
					t.Errorf("trial %d: %d winners, want exactly 1", trial, n)
					continue
				}
				w, _ := winner.Load(trial)
				got, err := dbs[1].Get(table, fmt.Appendf(nil, "%s-%d", from, trial))
				if err != nil || !bytes.Equal(got, w.([]byte)) {
					t.Errorf("trial %d: stored %q, %v; the winner wrote %q", trial, got, err, w)
				}
			}
		})
	}
}
