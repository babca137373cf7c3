package ca

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/internal/pgnosql"
	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// TestMain stops the package's PostgreSQL test cluster (started by the
// first pgtest.New) after the tests.
func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// openCADB opens smallstep's tables on a test database through pgnosql,
// closed at cleanup.
func openCADB(t testing.TB, dsn string) *pgnosql.DB {
	t.Helper()
	db, err := pgnosql.Open(dsn, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// The CA database given in Options.CADB (PostgreSQL through pgnosql) is
// the one Init creates the tables in and the authority uses: no bbolt file
// is written, issued certificates, used tokens and revocations land in
// PostgreSQL, Database() (the bbolt backup handle) is nil, and Close
// leaves the given database open.
func TestCADBOnPostgreSQL(t *testing.T) {
	pdb := pgtest.New(t)
	cadb := openCADB(t, pdb.DSN)
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{Name: "test", Hosts: []string{"hearth.test"}, CADB: cadb}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, DatabaseName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Init with a CA database wrote %s (%v)", DatabaseName, err)
	}
	hdb, err := bbolt.Open(filepath.Join(dir, "hearth.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hdb.Close() })
	tc := startTestCA(t, dir, Config{}, Options{Store: boltstore.New(hdb), CADB: cadb})
	if tc.Database() != nil {
		t.Error("Database() on PostgreSQL is not nil")
	}
	ctx := context.Background()
	tok, err := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	csr := tc.deviceCSR(t, "pi", newKey(t))
	st, out := tc.enroll(t, tok.Token, csr)
	if st != http.StatusCreated {
		t.Fatalf("enroll = %d %v", st, out)
	}
	leaf := parseCertPEM(t, out["certificate"].(string))
	if st, out := tc.enroll(t, tok.Token, csr); st != http.StatusUnauthorized {
		t.Errorf("second enroll with the token = %d %v, want 401", st, out)
	}
	pool := pdb.Pool(t)
	count := func(table string) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM hearth_ca."+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count("x509_certs"); n != 1 {
		t.Errorf("%d rows in hearth_ca.x509_certs, want 1", n)
	}
	if n := count("used_ott"); n != 1 {
		t.Errorf("%d rows in hearth_ca.used_ott, want 1", n)
	}
	if _, _, err := tc.LookupDevice(ctx, leaf); err != nil {
		t.Errorf("LookupDevice = %v", err)
	}
	if _, err := tc.RevokeDevice(ctx, "pi"); err != nil {
		t.Fatal(err)
	}
	if ok, err := tc.sdb.IsRevoked(leaf.SerialNumber.String()); !ok || err != nil {
		t.Errorf("IsRevoked on PostgreSQL = %v %v", ok, err)
	}
	if err := tc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cadb.Get([]byte("x509_certs"), []byte(leaf.SerialNumber.String())); err != nil {
		t.Errorf("the CA database given in Options.CADB is unusable after Close: %v", err)
	}
}
