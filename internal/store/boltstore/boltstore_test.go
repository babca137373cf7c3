package boltstore

import (
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/storetest"
)

// The conformance suite on bbolt: one process, so the two handles of the
// races are the same Store (bbolt's file lock admits one opener).
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, store.Store) {
		s, err := Open(filepath.Join(t.TempDir(), "hearth.db"), &bbolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, s
	})
}
