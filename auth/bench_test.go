package auth

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
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

// BenchmarkStores measures a login (tiny argon2id parameters, so that the
// figure is the store's part: charge, read, issue) and the gateway's token
// check on bbolt and on PostgreSQL with one and two Services on one
// database, side by side in one run. Logins run GOMAXPROCS at once, each
// goroutine as its own user (one user's concurrent logins would lock it
// out); with two Services they alternate; unavailable/op is the share
// answered 503 (a serialization conflict PostgreSQL gave up on). "authenticate-stale" is the check
// of a replica whose feed is down: one read of the store per request.
func BenchmarkStores(b *testing.B) {
	cases := []struct {
		name string
		open func(b *testing.B) []store.Store
	}{
		{"bbolt", func(b *testing.B) []store.Store {
			db := openDB(b, b.TempDir())
			b.Cleanup(func() { db.Close() })
			return []store.Store{boltstore.New(db)}
		}},
		{"postgres-1", func(b *testing.B) []store.Store {
			return []store.Store{openPG(b, pgtest.New(b).PassfileDSN(b), "hearth-a")}
		}},
		{"postgres-2", func(b *testing.B) []store.Store {
			dsn := pgtest.New(b).PassfileDSN(b)
			return []store.Store{openPG(b, dsn, "hearth-a"), openPG(b, dsn, "hearth-b")}
		}},
		{"postgres-stale", func(b *testing.B) []store.Store {
			return []store.Store{&staleStore{Store: openPG(b, pgtest.New(b).PassfileDSN(b), "hearth-a")}}
		}},
	}
	services := func(b *testing.B, sts []store.Store) []*Service {
		var ss []*Service
		for _, st := range sts {
			s, err := Open(st, Config{Argon2: tinyArgon2, ClientBurst: 1 << 30}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			ss = append(ss, s)
		}
		return ss
	}
	ctx := context.Background()
	for _, c := range cases {
		if c.name != "postgres-stale" {
			b.Run("login/"+c.name, func(b *testing.B) {
				ss := services(b, c.open(b))
				const users = 64
				for i := range users {
					if err := ss[0].AddUser(ctx, fmt.Sprintf("u%d", i), []string{"system:read"}, alicePw); err != nil {
						b.Fatal(err)
					}
				}
				var next, unavailable atomic.Int32
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					n := int(next.Add(1))
					name := fmt.Sprintf("u%d", n%users)
					for i := 0; pb.Next(); i++ {
						_, err := ss[(n+i)%len(ss)].Login(ctx, LoginRequest{Username: name, Password: alicePw, Client: "127.0.0.1:1"})
						switch {
						case errors.Is(err, ErrUnavailable):
							unavailable.Add(1) // a 503: PostgreSQL gave up on a serialization conflict
						case err != nil:
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(unavailable.Load())/float64(b.N), "unavailable/op")
			})
		}
		b.Run("authenticate/"+c.name, func(b *testing.B) {
			ss := services(b, c.open(b))
			if err := ss[0].AddUser(ctx, "alice", []string{"system:read"}, alicePw); err != nil {
				b.Fatal(err)
			}
			var tok string
			for range 300 { // a realistic index: a few hundred live tokens
				sess, err := ss[0].IssueSession(ctx, "alice", "password", false, "127.0.0.1:1")
				if err != nil {
					b.Fatal(err)
				}
				tok = sess.Token
			}
			for _, s := range ss { // every replica has it (through the feed)
				for deadline := time.Now().Add(5 * time.Second); ; {
					if _, err := s.AuthenticateToken(ctx, tok); err == nil {
						break
					} else if time.Now().After(deadline) {
						b.Fatal(err)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			var next atomic.Int32
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				s := ss[int(next.Add(1))%len(ss)]
				for pb.Next() {
					if _, err := s.AuthenticateToken(ctx, tok); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
