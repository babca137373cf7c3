package pgnosql

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"

	"github.com/hearth-home/hearth/internal/pgtest"
)

// BenchmarkUseToken measures step-ca's one-time-token write (CmpAndSwap
// from nil on a new key), in parallel, on this driver, on smallstep's stock
// PostgreSQL driver (not atomic, for the cost comparison only) and on the
// embedded bbolt driver hearth uses by default. The test cluster runs with
// fsync off (internal/pgtest) while bbolt syncs every commit, so only the
// two PostgreSQL figures compare like with like.
func BenchmarkUseToken(b *testing.B) {
	var n atomic.Int64
	run := func(b *testing.B, db database.DB) {
		table := []byte("used_ott")
		if err := db.CreateTable(table); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := fmt.Appendf(nil, "jti-%d", n.Add(1))
				if _, ok, err := db.CmpAndSwap(table, k, nil, k); err != nil || !ok {
					b.Errorf("CmpAndSwap = %v, %v", ok, err)
				}
			}
		})
	}
	b.Run("driver=pgnosql", func(b *testing.B) {
		db, err := Open(pgtest.New(b).DSN, "")
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		run(b, db)
	})
	b.Run("driver=stock-postgresql", func(b *testing.B) {
		db, err := nosql.New(nosql.PostgreSQLDriver, pgtest.New(b).DSN)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		run(b, db)
	})
	b.Run("driver=bbolt", func(b *testing.B) {
		db, err := nosql.New(nosql.BBoltDriver, b.TempDir()+"/db")
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		run(b, db)
	})
}
