package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/config"

	"github.com/rs/zerolog"
)

// TestStoreDSNRefusesPassword: --store-dsn is checked like hearth.yaml's
// store.dsn, before anything is opened: a password in it is refused, and
// the error says where the password goes and does not repeat it.
func TestStoreDSNRefusesPassword(t *testing.T) {
	dir := initializedDir(t)
	for _, dsn := range []string{
		"postgres://hearth:hunter2@127.0.0.1/hearth",
		"host=127.0.0.1 user=hearth password=hunter2 dbname=hearth",
	} {
		s, err := Open(Options{Dir: dir, Logger: zerolog.Nop(), StoreDSN: dsn})
		if err == nil {
			s.Close()
			t.Fatalf("Open with --store-dsn %q succeeded", dsn)
		}
		if !strings.Contains(err.Error(), "passfile=") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open with --store-dsn %q = %v, want an error naming passfile= without the password", dsn, err)
		}
	}
}

// TestReloadStoreNeedsRestart: a store section added to hearth.yaml while
// serving is validated by a reload (a DSN with a password is refused, the
// running configuration kept) and, when valid, named as needing a
// restart; the server keeps its store.
func TestReloadStoreNeedsRestart(t *testing.T) {
	dir := initializedDir(t)
	s, err := Open(Options{Dir: dir, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := filepath.Join(dir, config.FileName)
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	write := func(store string) {
		t.Helper()
		if err := os.WriteFile(p, append(append([]byte(nil), orig...), store...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	write("\nstore:\n  driver: postgres\n  dsn: \"host=127.0.0.1 dbname=hearth user=hearth password=hunter2\"\n")
	if _, err := s.Reload(ctx, authz.LocalPrincipalID, "socket"); !errors.Is(err, ErrConfigRefused) || !strings.Contains(err.Error(), "passfile=") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Reload with a password in store.dsn = %v, want a refusal naming passfile= without the password", err)
	}
	pass := filepath.Join(t.TempDir(), "pgpass")
	if err := os.WriteFile(pass, []byte("*:*:*:hearth:x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write("\nstore:\n  driver: postgres\n  dsn: \"host=127.0.0.1 dbname=hearth user=hearth passfile=" + pass + "\"\n")
	res, err := s.Reload(ctx, authz.LocalPrincipalID, "socket")
	if err != nil {
		t.Fatalf("Reload with a valid store section = %v", err)
	}
	if !slices.Contains(res.RestartNeeded, "store") {
		t.Errorf("Reload = %+v, want store among restart_needed", res)
	}
	if s.store.Driver() != "bbolt" {
		t.Errorf("the store after the reload is %s, want bbolt until a restart", s.store.Driver())
	}
}
