package storetest

import (
	"bytes"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/hearth-home/hearth/internal/store"
)

// recordSize is about a user record with a password hash, TOTP and a few
// passkeys.
const recordSize = 512

// Bench measures a driver on hearth's typical transactions: one
// read-modify-write Update (latency), 16 parallel writers on distinct keys
// and on one hot key (throughput; the writers alternate between the two
// handles), and a one-record View. Drivers that retry report retries/op
// (through a Retries() int64 method).
func Bench(b *testing.B, open Open) {
	b.Run("UpdateRMW", func(b *testing.B) { benchRMW(b, open, false, false) })
	b.Run("Parallel16Distinct", func(b *testing.B) { benchRMW(b, open, true, false) })
	b.Run("Parallel16HotKey", func(b *testing.B) { benchRMW(b, open, true, true) })
	b.Run("ViewGet", func(b *testing.B) { benchView(b, open) })
}

func benchSetup(b *testing.B, open Open, keys int) (store.Store, store.Store) {
	sa, sb := open(b)
	if err := sa.Declare(bg, "bench"); err != nil {
		b.Fatal(err)
	}
	rec := bytes.Repeat([]byte{'r'}, recordSize)
	if err := sa.Update(bg, func(tx store.Tx) error {
		for i := range keys {
			if err := tx.Bucket("bench").Put([]byte("k"+strconv.Itoa(i)), rec); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return sa, sb
}

// rmw is the typical Update: read a record, change a byte, write it back.
func rmw(s store.Store, key []byte) error {
	return s.Update(bg, func(tx store.Tx) error {
		bk := tx.Bucket("bench")
		v := append([]byte{}, bk.Get(key)...)
		if len(v) > 0 {
			v[0]++
		}
		return bk.Put(key, v)
	})
}

func retries(s store.Store) int64 {
	if r, ok := s.(interface{ Retries() int64 }); ok {
		return r.Retries()
	}
	return 0
}

func benchRMW(b *testing.B, open Open, parallel, hot bool) {
	const writers = 16
	sa, sb := benchSetup(b, open, writers)
	before := retries(sa) + retries(sb)
	b.ResetTimer()
	if !parallel {
		for range b.N {
			if err := rmw(sa, []byte("k0")); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		var next atomic.Int64
		b.SetParallelism((writers + 1) / 2) // × GOMAXPROCS (2 on the CI machine) = 16 writers
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(1) - 1
			s := []store.Store{sa, sb}[i%2]
			key := []byte("k" + strconv.Itoa(int(i%writers)))
			if hot {
				key = []byte("k0")
			}
			for pb.Next() {
				if err := rmw(s, key); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
	if sa.Driver() != "bbolt" {
		b.ReportMetric(float64(retries(sa)+retries(sb)-before)/float64(b.N), "retries/op")
	}
}

func benchView(b *testing.B, open Open) {
	sa, _ := benchSetup(b, open, 1)
	key := []byte("k0")
	b.ResetTimer()
	for range b.N {
		if err := sa.View(bg, func(tx store.Tx) error {
			if len(tx.Bucket("bench").Get(key)) != recordSize {
				b.Error("record missing")
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}
