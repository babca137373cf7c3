package migrate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hearth-home/hearth/internal/bolttest"
	"github.com/hearth-home/hearth/internal/pgtest"
)

// BenchmarkRun moves a data dir of 10,000 store records, 1,000 CA records
// and 20,000 audit entries into a fresh database per iteration (the
// pgtest cluster: fsync off unless HEARTH_PGTEST_FSYNC=on).
func BenchmarkRun(b *testing.B) {
	dir := b.TempDir()
	recs := map[string]string{}
	for i := range 10000 {
		recs[fmt.Sprintf("key-%06d", i)] = fmt.Sprintf(`{"record":%d,"padding":"%0200d"}`, i, i)
	}
	certs := map[string]string{}
	for i := range 1000 {
		certs[fmt.Sprintf("%040x", i)] = fmt.Sprintf("%01000d", i)
	}
	bolttest.Write(b, filepath.Join(dir, StoreFile), map[string]map[string]string{"auth.users": recs})
	if err := os.Mkdir(filepath.Join(dir, "ca"), 0o700); err != nil {
		b.Fatal(err)
	}
	bolttest.Write(b, filepath.Join(dir, CADBFile), map[string]map[string]string{"x509_certs": certs})
	fileLog(b, dir, 20000)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dsn := pgtest.New(b).PassfileDSN(b)
		b.StartTimer()
		rep, err := Run(context.Background(), Options{From: dir, To: dsn})
		if err != nil || !rep.Moved {
			b.Fatalf("Run = %+v, %v", rep, err)
		}
	}
	b.ReportMetric(float64(20000*b.N)/b.Elapsed().Seconds(), "audit-entries/s")
	b.ReportMetric(float64(11000*b.N)/b.Elapsed().Seconds(), "records/s")
}
