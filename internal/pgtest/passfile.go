package pgtest

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
)

// PassfileDSN is the database's DSN in the form hearth accepts
// (pgstore.CheckDSN): a postgres:// URL without the password, which goes to
// a libpq .pgpass-format file of mode 0600 named by passfile=, removed at
// t.Cleanup.
func (d *DB) PassfileDSN(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(d.DSN)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	pw, _ := u.User.Password()
	pass := filepath.Join(t.TempDir(), "pgpass")
	line := fmt.Sprintf("%s:%s:%s:%s:%s\n", u.Hostname(), u.Port(), d.Name, u.User.Username(), pw)
	if err := os.WriteFile(pass, []byte(line), 0o600); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	u.User = url.User(u.User.Username())
	q := u.Query()
	q.Set("passfile", pass)
	u.RawQuery = q.Encode()
	return u.String()
}
