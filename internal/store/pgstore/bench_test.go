package pgstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/storetest"
)

// BenchmarkAuditAppend measures audit appends through the PostgreSQL
// sequencer as a request sees them: enqueue in a transaction, then wait
// until a signed checkpoint covers the entry — by polling (WaitAudited) or
// through one AuditWaiter; b.SetParallelism(8) gives 16 concurrent writers
// on the 2-core machine. The test cluster runs with fsync off, so this is
// the sequencer's cost, not a durable disk's.
func BenchmarkAuditAppend(b *testing.B) {
	b.Run("wait=poll", func(b *testing.B) { benchAppend(b, false) })
	b.Run("wait=listen", func(b *testing.B) { benchAppend(b, true) })
}

func benchAppend(b *testing.B, listen bool) {
	ctx := context.Background()
	db := pgtest.New(b)
	pool := db.Pool(b)
	if _, err := Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	signer := newTestSigner(b)
	seq := &Sequencer{Pool: pool, Sign: signer.sign, Name: "bench"}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- seq.Run(sctx) }()
	defer func() { cancel(); <-done }()
	wait := func(id int64) (int64, error) { return WaitAudited(ctx, pool, id) }
	if listen {
		w, err := NewAuditWaiter(ctx, pool, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		wait = func(id int64) (int64, error) { return w.Wait(ctx, id) }
	}
	var n atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var id int64
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
				id, err = EnqueueAudit(ctx, tx, fmt.Appendf(nil, `{"event":"bench","n":%d}`, n.Add(1)))
				return err
			})
			if err == nil {
				_, err = wait(id)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkStore: storetest's benchmarks on two replicas (two Opens) of
// one database of the test cluster (fsync off unless the cluster was
// started durable).
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(t testing.TB) (store.Store, store.Store) {
		db := pgtest.New(t)
		return open(t, db, Options{MaxConns: 16}), open(t, db, Options{MaxConns: 16})
	})
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
