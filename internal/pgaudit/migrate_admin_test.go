package pgaudit

import (
	"context"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgmigrate"
	"github.com/hearth-home/hearth/internal/pgtest"
)

// TestMigrationFillsExistingEntries: entries stored before migration 0002
// (a history written by an older hearth) get their event, principal and
// exact time from their bodies when it runs, as new ones do on insert.
func TestMigrationFillsExistingEntries(t *testing.T) {
	db := pgtest.New(t)
	pool := db.Pool(t)
	ctx := context.Background()
	migs, err := pgmigrate.Load(migrationFiles, "migrations")
	if err != nil || len(migs) < 2 {
		t.Fatalf("migrations: %d, %v", len(migs), err)
	}
	if _, err := pgmigrate.Run(ctx, pool, Schema, migs[:1]); err != nil {
		t.Fatal(err)
	}
	at := []time.Time{time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 10, 0, 0, 1, time.UTC), time.Date(2026, 12, 1, 10, 0, 0, 120000000, time.UTC)}
	for i, tm := range at {
		e := audit.Event{Time: tm, Name: audit.EventAuthLogin, Outcome: audit.OutcomeSuccess}
		if i == 1 {
			e.Principal = "user:alice"
		}
		body, err := audit.EncodeEvent(e, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, "INSERT INTO "+Schema+".entries (seq, body) VALUES ($1, $2)", i, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	for i, tm := range at {
		var event string
		var principal *string
		var ns int64
		if err := pool.QueryRow(ctx, "SELECT event, principal, at_ns FROM "+Schema+".entries WHERE seq = $1", i).Scan(&event, &principal, &ns); err != nil {
			t.Fatal(err)
		}
		wantP := i == 1
		if event != audit.EventAuthLogin || (principal != nil) != wantP || (wantP && *principal != "user:alice") || ns != tm.UnixNano() {
			t.Errorf("entry %d: event %q principal %v at_ns %d; want %s, principal %v, %d", i, event, principal, ns, audit.EventAuthLogin, wantP, tm.UnixNano())
		}
	}
}
