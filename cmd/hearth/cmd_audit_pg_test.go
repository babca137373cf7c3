package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgaudit"
	"github.com/hearth-home/hearth/internal/pgtest"
)

// TestAuditStoreVerifyAndExport runs `hearth audit verify --store-dsn` and
// `hearth audit export` against a history two replicas wrote in a real
// PostgreSQL, then the file verifier on the export.
func TestAuditStoreVerifyAndExport(t *testing.T) {
	db := pgtest.New(t)
	dir := t.TempDir()
	if err := audit.Init(dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for r := range 2 {
		l, err := pgaudit.Open(ctx, db.Pool(t), dir, pgaudit.Options{Name: fmt.Sprint("replica-", r)})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if err := l.Record(ctx, audit.Event{Name: audit.EventDeviceAdd, Outcome: audit.OutcomeSuccess, Principal: "user:alice", Resource: fmt.Sprint("device-", r, "-", i)}); err != nil {
				t.Fatal(err)
			}
		}
		l.Close()
	}
	// The DSN names a passfile (0600) instead of carrying the password.
	u, err := url.Parse(db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	passfile := filepath.Join(t.TempDir(), "pgpass")
	if err := os.WriteFile(passfile, []byte(fmt.Sprintf("%s:%s:%s:%s:%s\n", u.Hostname(), u.Port(), db.Name, u.User.Username(), pw)), 0o600); err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("host=%s port=%s dbname=%s user=%s passfile=%s sslmode=disable", u.Hostname(), u.Port(), db.Name, u.User.Username(), passfile)

	out := mustHearth(t, dir, "audit", "verify", "--store-dsn", dsn)
	if !strings.Contains(out, "ok: 12 entries") {
		t.Fatalf("verify --store-dsn: %q", out)
	}
	exp := t.TempDir()
	out = mustHearth(t, dir, "audit", "export", "--store-dsn", dsn, "--out", exp)
	if !strings.Contains(out, "exported to "+filepath.Join(exp, "audit")) {
		t.Fatalf("export: %q", out)
	}
	// The export verifies as a file log, with the data dir's key.
	vkey, err := os.ReadFile(filepath.Join(dir, "audit", "log.pub"))
	if err != nil {
		t.Fatal(err)
	}
	out = mustHearth(t, exp, "audit", "verify", "--strict", "--key", strings.TrimSpace(string(vkey)))
	if !strings.Contains(out, "ok: 12 entries") {
		t.Fatalf("verify of the export: %q", out)
	}
	// A changed row fails verification, naming the entry.
	if _, err := db.Pool(t).Exec(ctx, `UPDATE hearth_audit.entries SET body = convert_to(replace(convert_from(body, 'UTF8'), 'device-1-2', 'device-1-9'), 'UTF8') WHERE seq = 9`); err != nil {
		t.Fatal(err)
	}
	stdout, _, err := hearthCmd(t, dir, "", "audit", "verify", "--store-dsn", dsn)
	if err == nil || !strings.Contains(stdout, "FAILED at entry 9") {
		t.Fatalf("verify of a changed history: %v, %q", err, stdout)
	}
	// A password in the DSN is refused before connecting.
	_, stderr, err := hearthCmd(t, dir, "", "audit", "verify", "--store-dsn", db.DSN)
	if err == nil || !strings.Contains(stderr, "passfile") {
		t.Fatalf("a DSN with a password: %v, %q", err, stderr)
	}
}
