package auth

// auth on PostgreSQL: two Services on one database, as two replicas with
// their own pools and feeds (pgstore.Open twice), on a throwaway cluster
// (internal/pgtest: skipped only outside CI when no server binaries
// exist).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/pgstore"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// openPG opens a pgstore on dsn, closed at t.Cleanup.
func openPG(t testing.TB, dsn, app string) *pgstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := pgstore.Open(ctx, dsn, pgstore.Options{ApplicationName: app})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// pgReplicas are two Services on one fresh PostgreSQL database.
func pgReplicas(t *testing.T) (*replicas, *pgtest.DB) {
	db := pgtest.New(t)
	dsn := db.PassfileDSN(t)
	return openReplicas(t, openPG(t, dsn, "hearth-a"), openPG(t, dsn, "hearth-b"), true), db
}

func TestReplicasRefreshRacePG(t *testing.T) {
	r, _ := pgReplicas(t)
	raceRefresh(t, r, 50)
}

func TestReplicasCodesRacePG(t *testing.T) {
	r, _ := pgReplicas(t)
	raceCodes(t, r)
}

func TestReplicasLockoutPG(t *testing.T) {
	r, _ := pgReplicas(t)
	raceLockout(t, r)
}

// acceptedWithin waits until s accepts token (B learning of a token A
// issued, through the feed).
func (r *replicas) acceptedWithin(s *Service, token string, d time.Duration, what string) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		p, err := s.AuthenticateToken(context.Background(), token)
		if err == nil && p != nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: not accepted after %s (%v)", what, d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestChangesReachOtherReplicaPG: a token issued on A is accepted on B,
// and a logout, a password change or a disable on A is refused on B within
// the feed's bound (1 s).
func TestChangesReachOtherReplicaPG(t *testing.T) {
	r, _ := pgReplicas(t)
	ctx := context.Background()
	for _, n := range []string{"alice", "bob", "carol"} {
		if err := r.a.AddUser(ctx, n, []string{"system:read"}, alicePw); err != nil {
			t.Fatal(err)
		}
	}
	var toks []string
	for _, n := range []string{"alice", "bob", "carol"} {
		s, err := r.login(r.a, n, alicePw, "")
		if err != nil {
			t.Fatal(err)
		}
		r.acceptedWithin(r.b, s.Token, time.Second, n+"'s token on B")
		toks = append(toks, s.Token)
	}
	if err := r.a.Logout(ctx, toks[0], "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if err := r.a.SetPassword(ctx, "bob", alicePw, "another long passphrase", "", "", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if err := r.a.Disable(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	r.refusedWithin(r.b, toks[0], time.Second, "logout on A, token on B")
	r.refusedWithin(r.b, toks[1], time.Second, "password change on A, token on B")
	r.refusedWithin(r.b, toks[2], time.Second, "disable on A, token on B")
	// B's index dropped them (the feed, not a per-request read, did it).
	r.b.mu.RLock()
	n := len(r.b.tokens)
	r.b.mu.RUnlock()
	if n != 0 {
		t.Errorf("B's index holds %d tokens after every session ended on A, want 0", n)
	}
}

// TestRevocationWhileFeedKilledPG: with the feed's listening connections
// killed (pg_terminate_backend of application_name hearth-feed) and kept
// from reconnecting (the database refuses new connections; the pools keep
// theirs), B's feed goes stale and B reads the store for every token: a
// logout on A is refused on B within 1 s and a live token keeps working.
// With B's pool connections killed too, B cannot read the store and
// answers ErrUnavailable (the gateway's 503), never its cached index. Once
// connections are allowed again B's feed resumes and follows A.
func TestRevocationWhileFeedKilledPG(t *testing.T) {
	r, db := pgReplicas(t)
	ctx := context.Background()
	if err := r.a.AddUser(ctx, "alice", []string{"system:read"}, alicePw); err != nil {
		t.Fatal(err)
	}
	gone, err := r.login(r.a, "alice", alicePw, "")
	if err != nil {
		t.Fatal(err)
	}
	kept, _ := r.login(r.a, "alice", alicePw, "")
	r.acceptedWithin(r.b, gone.Token, time.Second, "token on B")
	r.acceptedWithin(r.b, kept.Token, time.Second, "token on B")

	admin := db.Admin(t)
	allow := func(on bool) {
		t.Helper()
		if _, err := admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %v", pgx.Identifier{db.Name}.Sanitize(), on)); err != nil {
			t.Fatal(err)
		}
	}
	kill := func(app string) int {
		t.Helper()
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
			app, db.Name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	allow(false)
	t.Cleanup(func() { allow(true) })
	if n := kill(pgstore.FeedApplicationName); n != 2 {
		t.Fatalf("killed %d feed connections, want 2 (one per replica)", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.b.feed.Fresh(time.Now()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r.b.feed.Fresh(time.Now()) {
		t.Fatal("B's feed is still fresh 5 s after its connection was killed")
	}
	if err := r.a.Logout(ctx, gone.Token, "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	r.refusedWithin(r.b, gone.Token, time.Second, "logout on A while B's feed is down")
	if p, err := r.b.AuthenticateToken(ctx, kept.Token); err != nil || p == nil {
		t.Errorf("a live token on B while its feed is down: %v, want accepted (read from the store)", err)
	}
	if kill("hearth-b") == 0 {
		t.Fatal("B has no pool connection to kill")
	}
	if p, err := r.b.AuthenticateToken(ctx, kept.Token); !errors.Is(err, ErrUnavailable) || p != nil {
		t.Errorf("B with its feed down and the store unreachable: %v %v, want ErrUnavailable", p, err)
	}

	allow(true)
	deadline = time.Now().Add(10 * time.Second)
	for !r.b.feed.Fresh(time.Now()) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := r.a.Logout(ctx, kept.Token, "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	r.refusedWithin(r.b, kept.Token, time.Second, "logout on A after B's feed came back")
	if _, err := r.b.AuthenticateToken(ctx, gone.Token); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("the first token on B after the feed came back: %v", err)
	}
}

func TestReplicasCeremonyPG(t *testing.T) {
	r, _ := pgReplicas(t)
	raceCeremony(t, r)
}

// TestCommitFailsAfterHooksPG: when PostgreSQL's COMMIT fails after the
// audit entries of a login were recorded (its connection is killed in the
// BeforeCommit hook: a real fault, not a simulated one), the login answers
// ErrUnavailable (503), no token is live or stored, and each entry is
// followed by its correction; the next login works.
func TestCommitFailsAfterHooksPG(t *testing.T) {
	r, db := pgReplicas(t)
	ctx := context.Background()
	if err := r.a.AddUser(ctx, "alice", []string{"system:read"}, alicePw); err != nil {
		t.Fatal(err)
	}
	admin := db.Admin(t)
	killed := 0
	f := func() error {
		if err := admin.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'hearth-a' AND datname = $1 AND state = 'idle in transaction'",
			db.Name).Scan(&killed); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond) // the backend is gone before the COMMIT is sent
		return nil
	}
	r.a.failCommit.Store(&f)
	n := len(r.rec.all())
	_, err := r.login(r.a, "alice", alicePw, "")
	r.a.failCommit.Store(nil)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, store.ErrCommit) || killed != 1 {
		t.Fatalf("login whose COMMIT failed (%d connection killed): %v, want ErrUnavailable wrapping store.ErrCommit", killed, err)
	}
	checkCorrected(t, r.rec.all()[n:], audit.EventAuthLogin, audit.EventTokenIssue)
	r.a.mu.RLock()
	live := len(r.a.tokens)
	r.a.mu.RUnlock()
	stored := 0
	if err := r.a.view(ctx, func(tx store.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error { stored++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if live != 0 || stored != 0 {
		t.Errorf("after the failed commit: %d tokens live, %d stored; want none", live, stored)
	}
	if _, err := r.login(r.a, "alice", alicePw, ""); err != nil {
		t.Errorf("the next login: %v", err)
	}
}
