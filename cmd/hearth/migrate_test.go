package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/migrate"
	"github.com/hearth-home/hearth/internal/pgaudit"
	"github.com/hearth-home/hearth/internal/pgnosql"
	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/pgstore"
)

// hearthSchemas counts the schemas hearth's parts create in the database.
func hearthSchemas(t *testing.T, pdb *pgtest.DB) int {
	t.Helper()
	var n int
	if err := pdb.Pool(t).QueryRow(context.Background(), "SELECT count(*) FROM information_schema.schemata WHERE schema_name IN ('hearth', 'hearth_ca', 'hearth_audit')").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A real installation — init, serve, a user with a password, an enrolled
// device, gateway requests and logins in the audit log — moves to a real
// PostgreSQL with every record: migrate refuses while it is served (and
// writes nothing), --check counts and writes nothing, migrate copies every
// bucket, table, entry and checkpoint (compared here record by record and
// entry by entry, and the history verifies through pgaudit with the same
// tree head), and a second migrate into the same database is refused.
func TestMigrateToPostgres(t *testing.T) {
	pdb := pgtest.New(t)
	dsn := pdb.PassfileDSN(t)
	dir := filepath.Join(t.TempDir(), "data")
	var in initOut
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "init", "--owner", "alice", "--agent", "sample", "--json")), &in); err != nil {
		t.Fatal(err)
	}
	_, upstream := startAgent(t)
	srv := startServe(t, dir, upstream)
	const pw = "a long passphrase of words"
	if out, errOut, err := hearthCmd(t, dir, pw+"\n", "user", "add", "bob", "--caps", "system:read"); err != nil {
		t.Fatalf("user add: %v\n%s%s", err, out, errOut)
	}
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "device", "add", "kitchen-pi", "--caps", "system:read", "--json")), &tok); err != nil {
		t.Fatal(err)
	}
	devDir := filepath.Join(t.TempDir(), "device")
	mustHearth(t, dir, "enroll", "--ca-url", "https://"+srv.gateway, "--fingerprint", in.Fingerprint, "--token", tok.Token, "--out", devDir)
	// A second device, enrolled and then revoked.
	var tok2 struct{ Token string }
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "device", "add", "old-pi", "--caps", "system:read", "--json")), &tok2); err != nil {
		t.Fatal(err)
	}
	oldDir := filepath.Join(t.TempDir(), "old")
	mustHearth(t, dir, "enroll", "--ca-url", "https://"+srv.gateway, "--fingerprint", in.Fingerprint, "--token", tok2.Token, "--out", oldDir)
	mustHearth(t, dir, "device", "revoke", "old-pi")
	status := func(c *http.Client) int {
		t.Helper()
		resp, err := c.Get("https://" + srv.gateway + "/api/status")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	client, _ := deviceClient(t, devDir)
	for range 3 {
		if got := status(client); got != http.StatusOK {
			t.Fatalf("GET /api/status = %d", got)
		}
	}
	oldClient, _ := deviceClient(t, oldDir)
	if got := status(oldClient); got != http.StatusUnauthorized && got != http.StatusForbidden {
		t.Fatalf("GET /api/status as the revoked device = %d, want 401 or 403", got)
	}
	if out, errOut, err := hearthCmd(t, dir, pw+"\n", "login", "--url", "https://"+srv.gateway, "--user", "bob", "--fingerprint", in.Fingerprint); err != nil || out == "" {
		t.Fatalf("login: %q, %v\n%s", out, err, errOut)
	}

	// While served: refused, with what to do, and nothing written.
	_, errOut, err := hearthCmd(t, dir, "", "migrate", "--from", dir, "--to", dsn)
	if err == nil || !strings.Contains(errOut, "stop `hearth serve` first") {
		t.Fatalf("migrate while served: %v, stderr %q; want a refusal saying to stop hearth serve", err, errOut)
	}
	if n := hearthSchemas(t, pdb); n != 0 {
		t.Fatalf("a refused migrate created %d schemas", n)
	}

	srv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-srv.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop within 20s of SIGTERM")
	}

	before := treeDigest(t, dir)
	var check, moved migrate.Report
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "migrate", "--from", dir, "--to", dsn, "--check", "--json")), &check); err != nil {
		t.Fatal(err)
	}
	if check.Moved || !check.TargetChecked || check.Store.Records() == 0 || check.CA.Records() == 0 || check.Audit.Entries < 5 || check.Audit.Checkpoints == 0 {
		t.Fatalf("migrate --check = %+v", check)
	}
	if n := hearthSchemas(t, pdb); n != 0 {
		t.Fatalf("migrate --check created %d schemas", n)
	}
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "migrate", "--from", dir, "--to", dsn, "--json")), &moved); err != nil {
		t.Fatal(err)
	}
	if !moved.Moved || moved.Store.Records() != check.Store.Records() || moved.CA.Records() != check.CA.Records() || moved.Audit != check.Audit {
		t.Fatalf("migrate = %+v, after --check %+v", moved, check)
	}
	compareMigrated(t, dir, dsn)
	if treeDigest(t, dir) != before {
		t.Error("migrate changed the data dir it read")
	}

	// A second migrate into the same database is refused and changes
	// nothing.
	_, errOut, err = hearthCmd(t, dir, "", "migrate", "--from", dir, "--to", dsn)
	if err == nil || !strings.Contains(errOut, "already holds hearth data") || !strings.Contains(errOut, "DROP SCHEMA") {
		t.Fatalf("second migrate: %v, stderr %q; want a refusal saying how to start over", err, errOut)
	}
	compareMigrated(t, dir, dsn)

	// hearth serve on the migrated database: the enrolled device still
	// reaches the gateway, the user still logs in with the same password,
	// and the history verifies with every migrated entry and the new ones.
	// The embedded stores are moved aside first, so that what serves can
	// only be the migrated copy.
	for _, f := range []string{migrate.StoreFile, migrate.CADBFile} {
		if err := os.Rename(filepath.Join(dir, f), filepath.Join(dir, f+".migrated")); err != nil {
			t.Fatal(err)
		}
	}
	srv = startServe(t, dir, upstream, "--store-dsn", dsn)
	client, _ = deviceClient(t, devDir)
	if got := status(client); got != http.StatusOK {
		t.Fatalf("GET /api/status on the migrated database = %d; serve stderr:\n%s", got, srv.stderr.String())
	}
	oldClient, _ = deviceClient(t, oldDir)
	if got := status(oldClient); got != http.StatusUnauthorized && got != http.StatusForbidden {
		t.Errorf("GET /api/status as the revoked device on the migrated database = %d, want 401 or 403", got)
	}
	// The enrollment token stays spent (its use moved with the device).
	if _, errOut, err := hearthCmd(t, dir, "", "enroll", "--ca-url", "https://"+srv.gateway, "--fingerprint", in.Fingerprint, "--token", tok.Token, "--out", filepath.Join(t.TempDir(), "again")); err == nil || !strings.Contains(errOut, "already used") {
		t.Errorf("enroll again with the used token: %v, stderr %q", err, errOut)
	}
	if out, errOut, err := hearthCmd(t, dir, pw+"\n", "login", "--url", "https://"+srv.gateway, "--user", "bob", "--fingerprint", in.Fingerprint); err != nil || out == "" {
		t.Fatalf("login on the migrated database: %q, %v\n%s", out, err, errOut)
	}
	if _, _, err := hearthCmd(t, dir, "wrong password!!\n", "login", "--url", "https://"+srv.gateway, "--user", "bob", "--fingerprint", in.Fingerprint); err == nil {
		t.Error("login with a wrong password succeeded on the migrated database")
	}
	var v struct {
		OK      bool   `json:"ok"`
		Entries int64  `json:"entries"`
		Error   string `json:"error"`
	}
	out := mustHearth(t, dir, "audit", "verify", "--store-dsn", dsn, "--json")
	if err := json.Unmarshal([]byte(out), &v); err != nil || !v.OK || v.Entries <= moved.Audit.Entries {
		t.Fatalf("audit verify --store-dsn after serving = %s (%v); want ok with more than the %d migrated entries", out, err, moved.Audit.Entries)
	}
}

// compareMigrated checks that the database holds exactly the data dir's
// records: every bucket of hearth.db through the PostgreSQL store, every
// table of the CA database through pgnosql, and every audit entry (at its
// index) and checkpoint through pgaudit.
func compareMigrated(t *testing.T, dir, dsn string) {
	t.Helper()
	ctx := context.Background()
	read := func(path string) map[string]map[string]string {
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		out := map[string]map[string]string{}
		db.View(func(tx *bbolt.Tx) error {
			return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
				recs := map[string]string{}
				b.ForEach(func(k, v []byte) error { recs[string(k)] = string(v); return nil })
				out[string(name)] = recs
				return nil
			})
		})
		return out
	}
	same := func(what string, want, got map[string]map[string]string) {
		t.Helper()
		if len(want) == 0 {
			t.Fatalf("%s: the source has no buckets", what)
		}
		for b, recs := range want {
			g, ok := got[b]
			if !ok {
				t.Errorf("%s: bucket %s missing in the target", what, b)
				continue
			}
			if len(g) != len(recs) {
				t.Errorf("%s: bucket %s has %d records, the source %d", what, b, len(g), len(recs))
			}
			for k, v := range recs {
				if g[k] != v {
					t.Errorf("%s: %s/%q differs in the target", what, b, k)
				}
			}
		}
	}

	st, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	src := read(filepath.Join(dir, migrate.StoreFile))
	got := map[string]map[string]string{}
	for b := range src {
		if err := st.Declare(ctx, b); err != nil {
			t.Fatal(err)
		}
		got[b] = map[string]string{}
		if err := st.View(ctx, func(tx store.Tx) error {
			return tx.Bucket(b).ForEach(func(k, v []byte) error { got[b][string(k)] = string(v); return nil })
		}); err != nil {
			t.Fatal(err)
		}
	}
	same(migrate.StoreFile, src, got)
	for _, b := range []string{"auth.users", "ca.devices"} {
		if len(src[b]) == 0 {
			t.Errorf("the source's %s is empty: the test installation should have records there", b)
		}
	}

	ndb, err := pgnosql.New(st.Pool(), pgnosql.DefaultSchema)
	if err != nil {
		t.Fatal(err)
	}
	casrc := read(filepath.Join(dir, migrate.CADBFile))
	cagot := map[string]map[string]string{}
	for b := range casrc {
		es, err := ndb.List([]byte(b))
		if err != nil {
			t.Fatalf("CA table %s: %v", b, err)
		}
		cagot[b] = map[string]string{}
		for _, e := range es {
			cagot[b][string(e.Key)] = string(e.Value)
		}
	}
	same(migrate.CADBFile, casrc, cagot)
	if len(casrc["x509_certs"]) == 0 {
		t.Error("the source CA database has no certificates: the test installation should have issued some")
	}

	fileRes, err := audit.Verify(dir, audit.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := audit.LoadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	pgRes, err := pgaudit.Verify(ctx, st.Pool(), pgaudit.VerifyOptions{VerifierKey: signer.VerifierKey()})
	if err != nil {
		t.Fatalf("pgaudit.Verify: %v", err)
	}
	if pgRes.Entries != fileRes.Entries || pgRes.Root != fileRes.Root || pgRes.Checkpoints != fileRes.Checkpoints || pgRes.Origin != fileRes.Origin {
		t.Errorf("PostgreSQL history %d entries, %d checkpoints, root %s, origin %s; file log %d, %d, %s, %s", pgRes.Entries, pgRes.Checkpoints, pgRes.Root, pgRes.Origin, fileRes.Entries, fileRes.Checkpoints, fileRes.Root, fileRes.Origin)
	}
	r, err := audit.NewReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := r.Read(0, int(fileRes.Entries))
	if err != nil || int64(len(ents)) != fileRes.Entries {
		t.Fatalf("reading the file log: %d entries, %v", len(ents), err)
	}
	rows, err := st.Pool().Query(ctx, "SELECT seq, body FROM "+pgaudit.Schema+".entries ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for ; rows.Next(); i++ {
		var seq int64
		var body []byte
		if err := rows.Scan(&seq, &body); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(ents[i])
		if seq != int64(i) || !bytes.Equal(audit.EntryLine(nil, seq, body), want) {
			t.Errorf("audit entry %d: stored at %d as %s, the file log has %s", i, seq, audit.EntryLine(nil, seq, body), want)
		}
	}
	if i != len(ents) {
		t.Errorf("the PostgreSQL history has %d entries, the file log %d", i, len(ents))
	}
}
