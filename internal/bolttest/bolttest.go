// Package bolttest exists for tests only: it writes bbolt files of given
// buckets and records, the shape of hearth.db and of the CA's database,
// for tests that read such files (hearth migrate, the stores' upgrade
// tests).
package bolttest

import (
	"testing"

	"go.etcd.io/bbolt"
)

// Write creates (or adds to) the bbolt file at path, mode 0600: every
// bucket of buckets (created if missing, even when it has no records) with
// its records.
func Write(t testing.TB, path string, buckets map[string]map[string]string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error {
		for name, recs := range buckets {
			b, err := tx.CreateBucketIfNotExists([]byte(name))
			if err != nil {
				return err
			}
			for k, v := range recs {
				if err := b.Put([]byte(k), []byte(v)); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
