package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStoreSection(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "pgpass")
	if err := os.WriteFile(private, []byte("*:*:*:hearth:secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(dir, "pgpass-shared")
	if err := os.WriteFile(shared, []byte("*:*:*:hearth:secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		yaml    string
		driver  string
		wantErr string // empty: valid
	}{
		{"", "bbolt", ""},
		{"store: {driver: bbolt}", "bbolt", ""},
		{"store: {driver: postgres, dsn: 'host=db user=hearth dbname=hearth passfile=" + private + "'}", "postgres", ""},
		{"store: {driver: postgres, dsn: 'postgres://hearth@db/hearth?passfile=" + private + "'}", "postgres", ""},
		{"store: {driver: postgres}", "postgres", "store.dsn is empty"},
		{"store: {dsn: 'host=db'}", "bbolt", "store.driver is bbolt"},
		{"store: {driver: sqlite}", "sqlite", "use bbolt"},
		{"store: {driver: postgres, dsn: 'host=db user=hearth password=hunter2'}", "postgres", "passfile="},
		{"store: {driver: postgres, dsn: 'postgres://hearth:hunter2@db/hearth'}", "postgres", "contains a password"},
		{"store: {driver: postgres, dsn: 'host=db passfile=" + shared + "'}", "postgres", "chmod 600"},
		{"store: {driver: postgres, dsn: 'host=db passfile=" + filepath.Join(dir, "none") + "'}", "postgres", "passfile"},
	} {
		cfg, err := Parse([]byte(c.yaml))
		if err != nil {
			t.Fatalf("Parse(%q) = %v", c.yaml, err)
		}
		if got := cfg.Store.DriverName(); got != c.driver {
			t.Errorf("%q: driver %q, want %q", c.yaml, got, c.driver)
		}
		err = cfg.Validate()
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("Validate(%q) = %v, want nil", c.yaml, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("Validate(%q) = %v, want an error containing %q", c.yaml, err, c.wantErr)
		case err != nil && strings.Contains(err.Error(), "hunter2"):
			t.Errorf("Validate(%q) = %v: the password is in the error", c.yaml, err)
		}
	}
	if _, err := Parse([]byte("store: {driver: postgres, dns: x}")); err == nil {
		t.Error("a misspelt store key parsed")
	}
}
