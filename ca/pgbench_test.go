package ca

import (
	"context"
	"testing"
	"time"
)

// BenchmarkEnrollBoltVsPostgres alternates, per iteration, one enrollment
// (token → certificate over hearth's enroll API, TLS 1.3 on loopback with
// keep-alive) on a CA on bbolt (hearth.db + the CA's bbolt file) and one on
// a CA on PostgreSQL (pgstore + pgnosql; the first of a replica pair, the
// second replica running too), flipping the order every iteration so that
// both see the same load, and reports each one's time per enrollment and
// their ratio. Tokens and CSRs are made before the timer starts.
//
//	go test -run XXX -bench EnrollBoltVsPostgres -benchtime 200x -count 5 ./ca
func BenchmarkEnrollBoltVsPostgres(b *testing.B) {
	bolt := newTestCA(b, Config{})
	pg, _, _ := pgReplicas(b)
	bItems := hearthItems(b, bolt, b.N)
	pItems := hearthItems(b, pg.testCA, b.N)
	bc, pc := benchClient(bolt), benchClient(pg.testCA)
	var tb, tp time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		doBolt := func() {
			t0 := time.Now()
			benchPost(b, bc, bolt.gateway.URL+EnrollPath, EnrollRequest{Token: bItems[i].token, CSR: bItems[i].csr})
			tb += time.Since(t0)
		}
		doPG := func() {
			t0 := time.Now()
			benchPost(b, pc, pg.gateway.URL+EnrollPath, EnrollRequest{Token: pItems[i].token, CSR: pItems[i].csr})
			tp += time.Since(t0)
		}
		if i%2 == 0 {
			doBolt()
			doPG()
		} else {
			doPG()
			doBolt()
		}
	}
	b.ReportMetric(float64(tb.Nanoseconds())/float64(b.N), "bbolt-ns/enroll")
	b.ReportMetric(float64(tp.Nanoseconds())/float64(b.N), "postgres-ns/enroll")
	b.ReportMetric(float64(tp)/float64(tb), "postgres/bbolt")
}

// BenchmarkLookupDevicePostgres is BenchmarkLookupDevice on a replica on
// PostgreSQL: the cached view while the feed is fresh (the store is read
// only on a miss or when the feed is stale).
func BenchmarkLookupDevicePostgres(b *testing.B) {
	a, _, _ := pgReplicas(b)
	_, leaf := a.enrolled(b, "pi", "system:read")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := a.LookupDevice(ctx, leaf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
