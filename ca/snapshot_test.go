package ca

import (
	"bytes"
	"testing"

	"go.etcd.io/bbolt"
)

// Database finds the open handle of the CA's database, and a snapshot
// written from it while the CA runs is a bbolt file holding its tables.
func TestDatabaseHandle(t *testing.T) {
	tc := newTestCA(t, Config{})
	db := tc.Database()
	if db == nil {
		t.Fatal("Database() = nil: smallstep's nosql bbolt driver changed its layout; see ca/snapshot.go")
	}
	var snap bytes.Buffer
	var buckets []string
	err := db.View(func(tx *bbolt.Tx) error {
		if _, err := tx.WriteTo(&snap); err != nil {
			return err
		}
		return tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			buckets = append(buckets, string(name))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if snap.Len() == 0 || len(buckets) == 0 {
		t.Errorf("snapshot %d bytes, buckets %v; want the CA's tables", snap.Len(), buckets)
	}
	if db.Path() != tc.dir+"/"+DatabaseName {
		t.Errorf("Database().Path() = %s, want %s/%s", db.Path(), tc.dir, DatabaseName)
	}
}
