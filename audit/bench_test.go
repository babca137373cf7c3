//go:build unix

package audit

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRecord measures durable appends (written, fsynced, covered by a
// signed checkpoint) with 1 to 64 concurrent writers on the real disk:
// group commit shows as fsyncs/op falling as writers grow (one fdatasync
// per batch: its entries and checkpoint are one framed append; the stored
// hashes are fsynced when a segment is full, which these runs do not
// reach).
func BenchmarkRecord(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			b.ReportAllocs()
			dir := newTestDir(b)
			fs := &faultFS{}
			l := openTest(b, dir, Config{}, Options{OpenFile: fs.open})
			defer l.Close()
			ev := testEvent(1)
			lat := make([][]time.Duration, writers)
			var next atomic.Int64
			fs.syncs.Store(0)
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			var wg sync.WaitGroup
			for g := range writers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						if err := l.Record(context.Background(), ev); err != nil {
							b.Error(err)
							return
						}
						lat[g] = append(lat[g], time.Since(t0))
					}
				})
			}
			wg.Wait()
			elapsed, cpu := time.Since(start), cpuTime()-cpu0
			b.StopTimer()
			// CPU per entry is what a busy machine changes least.
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
			all := slices.Concat(lat...)
			slices.Sort(all)
			syncs := float64(fs.syncs.Load())
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
			b.ReportMetric(syncs/float64(b.N), "fsyncs/op")
			b.ReportMetric(float64(b.N)/syncs, "entries/batch")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// noSync opens real files whose Sync does nothing: for building large logs
// to verify quickly, never for measuring appends.
func noSync(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}

type noSyncFile struct{ *os.File }

func (noSyncFile) Sync() error { return nil }

func buildLog(b *testing.B, entries, maxBatch int) string {
	dir := newTestDir(b)
	l := openTest(b, dir, Config{}, Options{OpenFile: noSync, MaxBatch: maxBatch})
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for next.Add(1) < int64(entries) {
				if err := l.Record(context.Background(), testEvent(int(next.Load()))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	l.Close()
	return dir
}

// BenchmarkVerify measures Verify on a log written by 64 writers (batches of
// up to 64 entries per checkpoint) and on one with a checkpoint per entry,
// where the Ed25519 signature checks dominate.
func BenchmarkVerify(b *testing.B) {
	for _, c := range []struct {
		name              string
		entries, maxBatch int
	}{
		{"batched", 200_000, MaxBatchLimit},
		{"checkpoint-per-entry", 20_000, 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			dir := buildLog(b, c.entries, c.maxBatch)
			b.ResetTimer()
			var res *VerifyResult
			cpu0 := cpuTime()
			for b.Loop() {
				var err error
				if res, err = Verify(dir, VerifyOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			cpu := cpuTime() - cpu0
			b.ReportMetric(float64(res.Entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
			// CPU time stays meaningful on a busy machine, where wall time
			// does not.
			b.ReportMetric(float64(res.Entries)*float64(b.N)/cpu.Seconds(), "entries/cpu-s")
			b.ReportMetric(float64(res.Checkpoints), "checkpoints")
		})
	}
}
