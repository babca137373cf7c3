package server

import (
	"strings"
	"testing"

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
