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
	storetest.Run(t, func(t testing.TB) (store.Store, store.Store) {
		s, err := Open(filepath.Join(t.TempDir(), "hearth.db"), &bbolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, s
	})
}

// BenchmarkStore: storetest's benchmarks on bbolt as hearth opens it
// (fsync on every commit) and, for comparison with a PostgreSQL that does
// not fsync (the test cluster), with NoSync.
func BenchmarkStore(b *testing.B) {
	for _, sync := range []bool{true, false} {
		name := "fsync=on"
		if !sync {
			name = "fsync=off"
		}
		b.Run(name, func(b *testing.B) {
			storetest.Bench(b, func(t testing.TB) (store.Store, store.Store) {
				s, err := Open(filepath.Join(t.TempDir(), "hearth.db"), &bbolt.Options{Timeout: time.Second, NoSync: !sync})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s, s
			})
		})
	}
}
