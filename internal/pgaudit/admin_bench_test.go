package pgaudit

import (
	"context"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgtest"
)

// BenchmarkAdminEntries reads one page (n=50) of a history of 200 000
// entries with each filter of the admin endpoint, newest first and paged
// far back: each op is one AdminEntries query.
//
//	go test -run '^$' -bench AdminEntries -count 5 ./internal/pgaudit/
func BenchmarkAdminEntries(b *testing.B) {
	const size = 200_000
	db := pgtest.New(b)
	pool := db.Pool(b)
	ctx := context.Background()
	if err := Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	// 1 in 1000 is an auth.login, principals device:d0…d99, one a second.
	if _, err := pool.Exec(ctx, `INSERT INTO `+Schema+`.entries (seq, body)
		SELECT g, convert_to(format('{"time":"%s","event":"%s","outcome":"success","principal":"device:d%s"}',
			to_char(timestamp '2026-01-01' + g * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
			CASE WHEN g % 1000 = 0 THEN 'auth.login' ELSE 'authz.decision' END, g % 100), 'UTF8')
		FROM generate_series(0, $1 - 1) g`, size); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE "+Schema+".entries"); err != nil {
		b.Fatal(err)
	}
	l := &Log{pool: pool}
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add((size - 3600) * time.Second)
	for _, c := range []struct {
		name string
		q    audit.AdminQuery
	}{
		{"newest", audit.AdminQuery{N: 50, Before: size}},
		{"paged-back", audit.AdminQuery{N: 50, Before: 1000}},
		{"rare-event", audit.AdminQuery{N: 50, Before: size, Event: audit.EventAuthLogin}},
		{"principal", audit.AdminQuery{N: 50, Before: size, Principal: "device:d7"}},
		{"principal+rare-event", audit.AdminQuery{N: 50, Before: size, Principal: "device:d0", Event: audit.EventAuthLogin}},
		{"since-last-hour", audit.AdminQuery{N: 50, Before: size, Since: since, Principal: "device:d7"}},
		{"n=1000", audit.AdminQuery{N: 1000, Before: size}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				es, err := l.AdminEntries(ctx, c.q)
				if err != nil || len(es) == 0 {
					b.Fatalf("%d entries, %v", len(es), err)
				}
			}
		})
	}
}

// BenchmarkAppendFields measures what migration 0002's three indexes (on
// event, principal and at_ns, which the replicas fill as they insert) cost
// the append path: Records through two replicas, 64 writers, with them
// (fields=on) and without them and the trigger (fields=off), one after the
// other in each run.
//
//	go test -run '^$' -bench AppendFields -benchtime 4000x -count 5 ./internal/pgaudit/
func BenchmarkAppendFields(b *testing.B) {
	for _, mode := range []struct {
		name string
		undo []string
	}{
		{"on", nil},
		{"off", []string{"ALTER TABLE entries DISABLE TRIGGER entries_fields", "DROP INDEX entries_event", "DROP INDEX entries_principal", "DROP INDEX entries_at"}},
	} {
		b.Run("fields="+mode.name, func(b *testing.B) {
			db := pgtest.New(b)
			dir := keysDir(b)
			pool := db.Pool(b)
			logs := []*Log{openLog(b, pool, dir, Options{Name: "r0"}), openLog(b, db.Pool(b), dir, Options{Name: "r1"})}
			for _, s := range mode.undo {
				if _, err := pool.Exec(context.Background(), "SET search_path TO "+Schema+"; "+s); err != nil {
					b.Fatal(err)
				}
			}
			el, _ := recordAll(b, logs, 64)
			b.ReportMetric(float64(b.N)/el.Seconds(), "entries/s")
		})
	}
}
