package pgaudit

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/pgtest"
)

// BenchmarkAppend measures Records through one and two replicas on one
// database: each op is one entry, committed, sequenced and covered by a
// signed checkpoint; writers is the total, spread over the replicas. It
// reports entries/s, the p99 latency of a Record and the mean entries per
// checkpoint (the sequencer's batch size).
// wake=notify-rarely is the default (see notifyEvery), wake=notify-always
// notifies the sequencer on every INSERT, for comparison.
// For durable-disk figures run the cluster with fsync on:
//
//	HEARTH_PGTEST_FSYNC=on go test -run '^$' -bench Append -benchtime 4000x -count 5 ./internal/pgaudit/
func BenchmarkAppend(b *testing.B) {
	b.Logf("PostgreSQL fsync on: %v", pgtest.Durable())
	defer func(e time.Duration) { notifyEvery = e }(notifyEvery)
	for _, wake := range []struct {
		name  string
		every time.Duration
	}{{"notify-rarely", notifyEvery}, {"notify-always", 0}} {
		notifyEvery = wake.every
		benchmarkAppend(b, wake.name)
	}
}

func benchmarkAppend(b *testing.B, wake string) {
	for _, replicas := range []int{1, 2} {
		for _, writers := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("wake=%s/replicas=%d/writers=%d", wake, replicas, writers), func(b *testing.B) {
				db := pgtest.New(b)
				dir := keysDir(b)
				logs := make([]*Log, replicas)
				for i := range logs {
					logs[i] = openLog(b, db.Pool(b), dir, Options{Name: fmt.Sprint("r", i)})
				}
				el, lat := recordAll(b, logs, writers)
				slices.Sort(lat)
				b.ReportMetric(float64(b.N)/el.Seconds(), "entries/s")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
				var cps int64
				if err := db.Pool(b).QueryRow(context.Background(), "SELECT count(*) FROM "+Schema+".checkpoints").Scan(&cps); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N+replicas)/float64(cps), "entries/checkpoint")
			})
		}
	}
}

// recordAll runs writers goroutines over logs (writer w on logs[w%len])
// recording b.N entries in all, and returns the elapsed time and each
// Record's latency.
func recordAll(b *testing.B, logs []*Log, writers int) (time.Duration, []time.Duration) {
	lat := make([]time.Duration, b.N)
	var next sync.Mutex
	k := 0
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		l := logs[w%len(logs)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next.Lock()
				i := k
				k++
				next.Unlock()
				if i >= b.N {
					return
				}
				t0 := time.Now()
				if err := l.Record(context.Background(), event(fmt.Sprint("bench ", i))); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	return el, lat
}
