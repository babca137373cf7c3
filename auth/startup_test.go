package auth

import (
	"context"
	"runtime"
	"testing"

	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// Open runs no argon2id: its dummy hash (for unknown users) is built from
// random bytes, so an idle server does not start with argon2id's 64 MiB in
// its heap (issue 13: idle RSS). The dummy still costs a full verification
// with the current parameters, and never matches.
func TestOpenRunsNoArgon2id(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := Open(boltstore.New(db), Config{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	runtime.ReadMemStats(&after)
	mem := s.hasher.params.MemoryKiB << 10
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc >= uint64(mem)/2 {
		t.Errorf("Open allocated %d MiB; an argon2id run (%d MiB) at start-up stays resident in an idle server", alloc>>20, mem>>20)
	}
	if n := s.hasher.evals.Load(); n != 0 {
		t.Errorf("Open ran argon2id %d times, want 0", n)
	}
	p, err := parsePHC(s.dummy)
	if err != nil || p.params != s.hasher.params || len(p.salt) != saltLen || len(p.tag) != tagLen {
		t.Fatalf("dummy hash %q (%v): want the current parameters, a %d-byte salt and a %d-byte tag", s.dummy, err, saltLen, tagLen)
	}
	release, err := s.hasher.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ok, _ := s.hasher.verify("", s.dummy)
	release()
	if ok || s.hasher.evals.Load() != 1 {
		t.Errorf("verify against the dummy = %v after %d argon2id runs; want a refusal after exactly one", ok, s.hasher.evals.Load())
	}
}
