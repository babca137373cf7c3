package pgstore

import (
	"context"
	"testing"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/storetest"
)

// BenchmarkStore: storetest's benchmarks on two replicas (two Opens) of
// one database of the test cluster (fsync off unless the cluster was
// started durable).
//
// notify=adaptive is the store's way of notifying the feed; in-tx (every
// Update notifies) and after (a notifier after every commit) are the two
// it chooses between, for comparison. Run one variant per process
// (-bench 'Store/notify=after/'): the first benchmark of a process runs
// just after CREATE DATABASE's checkpoint, when every first change of a
// page writes a full page image, and is slower for it.
func BenchmarkStore(b *testing.B) {
	for _, mode := range []struct {
		name string
		mode notifyMode
	}{{"adaptive", notifyAdaptive}, {"in-tx", notifyInTx}, {"after", notifyAfter}} {
		b.Run("notify="+mode.name, func(b *testing.B) {
			storetest.Bench(b, func(t testing.TB) (store.Store, store.Store) {
				db := pgtest.New(t)
				opts := Options{MaxConns: 16, notify: mode.mode}
				return open(t, db, opts), open(t, db, opts)
			})
		})
	}
}

// BenchmarkRoundTrip is the floor under BenchmarkStore's figures: one
// SELECT 1 through the pool.
func BenchmarkRoundTrip(b *testing.B) {
	s := open(b, pgtest.New(b), Options{})
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		var one int
		if err := s.Pool().QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			b.Fatal(err)
		}
	}
}
