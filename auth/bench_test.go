package auth

import (
	"context"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// BenchmarkArgon2idVerify is one password verification at the default
// parameters (RFC 9106 second recommendation: t=3, m=64 MiB, p=4).
func BenchmarkArgon2idVerify(b *testing.B) {
	h := newHasher(Argon2Params{Time: DefaultArgon2Time, MemoryKiB: DefaultArgon2MemoryKiB, Threads: DefaultArgon2Threads}, 1, 1, fixedReader{})
	enc, err := h.hash("correct horse battery staple")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if ok, _ := h.verify("correct horse battery staple", enc); !ok {
			b.Fatal("verify failed")
		}
	}
}

func benchService(b *testing.B) (*Service, string) {
	db := openDB(b, b.TempDir())
	b.Cleanup(func() { db.Close() })
	clk := &fakeClock{t: time.Now()}
	s, err := Open(boltstore.New(db), Config{Argon2: tinyArgon2}, Options{Now: clk.Now})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if err := s.AddUser(ctx, "alice", []string{"system:admin"}, alicePw); err != nil {
		b.Fatal(err)
	}
	// A realistic index: a few hundred live tokens.
	var tok string
	for i := 0; i < 300; i++ {
		sess, err := s.IssueSession(ctx, "alice", "password", false, "127.0.0.1:1")
		if err != nil {
			b.Fatal(err)
		}
		tok = sess.Token
	}
	return s, tok
}

// BenchmarkAuthenticateToken is the gateway's per-request token check.
func BenchmarkAuthenticateToken(b *testing.B) {
	s, tok := benchService(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.AuthenticateToken(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateTokenParallel checks the same under contention.
func BenchmarkAuthenticateTokenParallel(b *testing.B) {
	s, tok := benchService(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.AuthenticateToken(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
