package server

import (
	"context"
	"github.com/hearth-home/hearth/internal/config"
	"github.com/hearth-home/hearth/internal/pgtest"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// A data dir made by Init once per test binary: Init runs argon2id for the
// owner and generates the CA's keys, which takes seconds under -race, so
// tests that only need some data dir get a copy of this one.
var fixture struct {
	once sync.Once
	dir  string
	err  error
}

// TestMain removes the shared data dir at the end.
func TestMain(m *testing.M) {
	code := pgtest.Run(m) // stops the PostgreSQL cluster if a test started one
	if fixture.dir != "" {
		os.RemoveAll(filepath.Dir(fixture.dir))
	}
	os.Exit(code)
}

// initializedDir returns a fresh copy of a data dir Init made, under the
// test's temporary directory.
func initializedDir(t *testing.T) string {
	t.Helper()
	fixture.once.Do(func() {
		parent, err := os.MkdirTemp("", "hearth-fixture-")
		if err != nil {
			fixture.err = err
			return
		}
		fixture.dir = filepath.Join(parent, "data")
		_, fixture.err = Init(context.Background(), fixture.dir, InitOptions{Listen: "127.0.0.1:0", CAListen: "127.0.0.1:0", Agent: config.AgentSample})
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	dst := filepath.Join(t.TempDir(), "data")
	err := filepath.WalkDir(fixture.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(fixture.dir, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(to, fi.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
