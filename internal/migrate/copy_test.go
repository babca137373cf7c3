package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/internal/bolttest"
	"github.com/hearth-home/hearth/internal/pgnosql"
	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

func openRO(t *testing.T, path string) *bbolt.DB {
	t.Helper()
	db, err := openBolt(path, DefaultLockTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var sample = map[string]map[string]string{
	"auth.users":  {"alice": `{"name":"alice"}`, "bob": `{"name":"bob"}`},
	"auth.tokens": {"\x00\xff": "binary key", "k": ""},
	"ca.devices":  {"kitchen-pi": `{"caps":["system:read"]}`},
	"later.added": {},
}

// copyStore copies every bucket (an empty one and binary keys and empty
// values included), refuses a target that holds any of its records, and
// clearStore empties the buckets again.
func TestCopyStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bolttest.Write(t, filepath.Join(dir, "src.db"), sample)
	src := boltstore.New(openRO(t, filepath.Join(dir, "src.db")))
	names, err := boltBuckets(openRO(t, filepath.Join(dir, "src.db")))
	if err != nil || len(names) != len(sample) {
		t.Fatalf("boltBuckets = %v, %v", names, err)
	}
	want, err := storeTallies(ctx, src, names)
	if err != nil || want.Records() != 5 {
		t.Fatalf("tallies = %v (%d records), %v", want, want.Records(), err)
	}
	dst, err := boltstore.Open(filepath.Join(dir, "dst.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := copyStore(ctx, src, names, want, dst); err != nil {
		t.Fatal(err)
	}
	got, err := storeTallies(ctx, dst, names)
	if err != nil || want.diff(got) != "" {
		t.Fatalf("target differs: %q, %v", want.diff(got), err)
	}
	if err := dst.View(ctx, func(tx store.Tx) error {
		if v := tx.Bucket("auth.tokens").Get([]byte("\x00\xff")); string(v) != "binary key" {
			return fmt.Errorf("binary key = %q", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := copyStore(ctx, src, names, want, dst); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("second copy = %v, want ErrNotEmpty", err)
	}
	if err := clearStore(ctx, dst, names); err != nil {
		t.Fatal(err)
	}
	if got, _ := storeTallies(ctx, dst, names); got.Records() != 0 {
		t.Fatalf("after clearStore %d records remain", got.Records())
	}
}

// A copy whose tallies differ from the source's is rolled back: nothing
// of it is in the target.
func TestCopyStoreMismatchRollsBack(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bolttest.Write(t, filepath.Join(dir, "src.db"), sample)
	src := boltstore.New(openRO(t, filepath.Join(dir, "src.db")))
	names, _ := boltBuckets(openRO(t, filepath.Join(dir, "src.db")))
	want, _ := storeTallies(ctx, src, names)
	// The source as the copy must see it, but one record changed since it
	// was tallied.
	t2 := Tallies{}
	for n, v := range want {
		t2[n] = v
	}
	bad := newTallier()
	bad.add([]byte("alice"), []byte("changed"))
	bad.add([]byte("bob"), []byte(`{"name":"bob"}`))
	t2["auth.users"] = bad.tally()
	dst, err := boltstore.Open(filepath.Join(dir, "dst.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	err = copyStore(ctx, src, names, t2, dst)
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("copy = %v, want ErrMismatch", err)
	}
	if got, _ := storeTallies(ctx, dst, names); got.Records() != 0 {
		t.Fatalf("a mismatched copy left %d records", got.Records())
	}
}

// copyCA moves smallstep's tables into pgnosql on a real PostgreSQL, keys
// and values byte for byte; clearCA empties them again.
func TestCopyCA(t *testing.T) {
	ctx := context.Background()
	pdb := pgtest.New(t)
	pool := pdb.Pool(t)
	dir := t.TempDir()
	tables := map[string]map[string]string{
		"x509_certs":          {"01": "cert one", "02": "cert two"},
		"used_ott":            {"jti": "token"},
		"acme_nonces":         {},
		"hearth_device_certs": {"inc": "index"},
	}
	bolttest.Write(t, filepath.Join(dir, "db"), tables)
	raw := openRO(t, filepath.Join(dir, "db"))
	names, err := boltBuckets(raw)
	if err != nil {
		t.Fatal(err)
	}
	src := boltstore.New(raw)
	want, _ := storeTallies(ctx, src, names)
	ndb, err := pgnosql.New(pool, pgnosql.DefaultSchema)
	if err != nil {
		t.Fatal(err)
	}
	if err := copyCA(ctx, src, names, want, ndb); err != nil {
		t.Fatal(err)
	}
	v, err := ndb.Get([]byte("x509_certs"), []byte("02"))
	if err != nil || !bytes.Equal(v, []byte("cert two")) {
		t.Fatalf("x509_certs/02 = %q, %v", v, err)
	}
	if es, err := ndb.List([]byte("acme_nonces")); err != nil || len(es) != 0 {
		t.Fatalf("acme_nonces = %v, %v; want an empty table", es, err)
	}
	if err := clearCA(ctx, pool, pgnosql.DefaultSchema, names); err != nil {
		t.Fatal(err)
	}
	if es, _ := ndb.List([]byte("x509_certs")); len(es) != 0 {
		t.Fatalf("after clearCA x509_certs has %d records", len(es))
	}
}
