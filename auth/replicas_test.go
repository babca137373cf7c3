package auth

// Two Services on one store, as two replicas on one database: the
// single-use and lockout races every driver must win (they run on bbolt
// here and on PostgreSQL in pg_test.go), and the stale-feed rule.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/hotp"

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// replicas are two Services on one database, with one clock and one audit
// recorder. feed says whether each hears the other's changes (PostgreSQL),
// so that the tests may ask B's index to follow A.
type replicas struct {
	t    *testing.T
	a, b *Service
	clk  *fakeClock
	rec  *recorder
	feed bool
}

func openReplicas(t *testing.T, sa, sb store.Store, feed bool) *replicas {
	t.Helper()
	r := &replicas{t: t, clk: &fakeClock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}, rec: &recorder{}, feed: feed}
	cfg := Config{Argon2: tinyArgon2, ClientBurst: 1 << 20}
	for _, p := range []struct {
		s  **Service
		st store.Store
	}{{&r.a, sa}, {&r.b, sb}} {
		s, err := Open(p.st, cfg, Options{Audit: r.rec, Now: r.clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		*p.s = s
	}
	return r
}

// boltReplicas are two Services on one hearth.db. bbolt has no feed (one
// process is its only writer), so B's index does not follow A's changes;
// what the store decides (single use, lockout) is the same.
func boltReplicas(t *testing.T) *replicas {
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	st := boltstore.New(db)
	return openReplicas(t, st, st, false)
}

// pick alternates between the replicas.
func (r *replicas) pick(i int) *Service {
	if i%2 == 0 {
		return r.a
	}
	return r.b
}

func (r *replicas) evals() int64 { return r.a.hasher.evals.Load() + r.b.hasher.evals.Load() }

// race runs n calls of fn at once (released together) and returns their
// errors.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// oneWinner checks that exactly one of errs is nil and the others are
// refusals (wrong credentials, or throttled by the charges of the
// concurrent attempts), never a store error.
func oneWinner(t *testing.T, what string, errs []error) {
	t.Helper()
	wins := 0
	for _, err := range errs {
		var te *ThrottledError
		switch {
		case err == nil:
			wins++
		case errors.Is(err, ErrInvalidCredentials), errors.As(err, &te):
		default:
			t.Errorf("%s: %v, want success or a refusal", what, err)
		}
	}
	if wins != 1 {
		t.Errorf("%s: %d winners of %d racers, want exactly 1", what, wins, len(errs))
	}
}

// refusedWithin checks that s refuses token within d (at once when the
// replicas have no feed: then only the store's answer is checked, on the
// replica that made the change).
func (r *replicas) refusedWithin(s *Service, token string, d time.Duration, what string) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		_, err := s.AuthenticateToken(context.Background(), token)
		if errors.Is(err, authz.ErrInvalidToken) {
			return
		}
		if time.Now().After(deadline) {
			r.t.Errorf("%s: the token still authenticates after %s (%v)", what, d, err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *replicas) login(s *Service, name, pw, code string) (*Session, error) {
	return s.Login(context.Background(), LoginRequest{Username: name, Password: pw, TOTP: code, Client: "127.0.0.1:4000"})
}

// raceRefresh: of 8 racers presenting one refresh token across both
// replicas, one gets a new pair and the reuse by the others revokes the
// family (RFC 9700 §4.14.2), on both replicas.
func raceRefresh(t *testing.T, r *replicas, sessions int) {
	ctx := context.Background()
	if err := r.a.AddUser(ctx, "alice", []string{"system:read"}, alicePw); err != nil {
		t.Fatal(err)
	}
	for i := range sessions {
		sess, err := r.login(r.pick(i), "alice", alicePw, "")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var won *Session
		errs := race(8, func(j int) error {
			s, err := r.pick(j).Refresh(ctx, sess.RefreshToken, "127.0.0.1:4001")
			if err == nil {
				mu.Lock()
				won = s
				mu.Unlock()
			}
			return err
		})
		oneWinner(t, fmt.Sprintf("session %d: refresh", i), errs)
		if won == nil {
			continue
		}
		if _, err := r.pick(i+1).Refresh(ctx, won.RefreshToken, "127.0.0.1:4001"); !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("session %d: the winner's refresh token after the reuse: %v, want refused (family revoked)", i, err)
		}
		if r.feed {
			r.refusedWithin(r.a, won.Token, time.Second, fmt.Sprintf("session %d on A", i))
			r.refusedWithin(r.b, won.Token, time.Second, fmt.Sprintf("session %d on B", i))
			r.refusedWithin(r.b, sess.Token, time.Second, fmt.Sprintf("session %d's first token on B", i))
		}
	}
}

// raceCodes: a recovery code, a reset code and a TOTP step are each
// accepted once of 8 racers across both replicas (RFC 6238 §5.2 for the
// step).
func raceCodes(t *testing.T, r *replicas) {
	ctx := context.Background()
	for _, n := range []string{"rita", "rene", "tara"} {
		if err := r.a.AddUser(ctx, n, []string{"system:read"}, alicePw); err != nil {
			t.Fatal(err)
		}
	}
	codes, err := r.b.RegenerateRecoveryCodes(ctx, "rita")
	if err != nil {
		t.Fatal(err)
	}
	errs := race(8, func(j int) error {
		return r.pick(j).Recover(ctx, RecoverRequest{Username: "rita", RecoveryCode: codes[0], NewPassword: fmt.Sprintf("a new passphrase number %d", j), Client: "127.0.0.1:4002"})
	})
	oneWinner(t, "recovery code", errs)
	us, err := r.a.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range us {
		if u.Name == "rita" && u.RecoveryCodesLeft != RecoveryCodeCount-1 {
			t.Errorf("recovery codes left after the race: %d, want %d", u.RecoveryCodesLeft, RecoveryCodeCount-1)
		}
	}

	code, _, err := r.a.ResetCode(ctx, "rene")
	if err != nil {
		t.Fatal(err)
	}
	errs = race(8, func(j int) error {
		return r.pick(j).ResetPassword(ctx, "rene", code, fmt.Sprintf("a new passphrase number %d", j), "127.0.0.1:4003")
	})
	oneWinner(t, "reset code", errs)

	secret, _, err := r.a.EnrollTOTP(ctx, "tara")
	if err != nil {
		t.Fatal(err)
	}
	step := uint64(r.clk.Now().Unix()) / totpPeriod
	c, _ := hotp.GenerateCodeCustom(secret, step, totpOpts)
	if err := r.b.ConfirmTOTP(ctx, "tara", c); err != nil {
		t.Fatal(err)
	}
	r.clk.Advance(totpPeriod * time.Second)
	c, _ = hotp.GenerateCodeCustom(secret, step+1, totpOpts)
	errs = race(8, func(j int) error {
		_, err := r.login(r.pick(j), "tara", alicePw, c)
		return err
	})
	oneWinner(t, "TOTP step", errs)
}

// raceLockout: 100 wrong guesses at one name, 10 at a time, spread over
// both replicas, let no more than the lockout threshold reach the argon2id
// check (each attempt is charged in the store before it), lose no
// failure, and lock the account on both; an unknown name answers exactly
// alike. Then, across lockout windows, every attempt that reached the
// check is counted.
func raceLockout(t *testing.T, r *replicas) {
	ctx := context.Background()
	if err := r.a.AddUser(ctx, "alice", []string{"system:read"}, alicePw); err != nil {
		t.Fatal(err)
	}
	guess := func(name string, n, at int) (checked int64, statuses map[string]int) {
		statuses = map[string]int{}
		var mu sync.Mutex
		before := r.evals()
		sem := make(chan struct{}, at)
		race(n, func(j int) error {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := r.login(r.pick(j), name, fmt.Sprintf("wrong guess %d", j), "")
			var te *ThrottledError
			k := "other"
			switch {
			case errors.Is(err, ErrInvalidCredentials):
				k = "401"
			case errors.As(err, &te):
				k = "429"
			default:
				t.Errorf("guess %d at %s: %v", j, name, err)
			}
			mu.Lock()
			statuses[k]++
			mu.Unlock()
			return nil
		})
		return r.evals() - before, statuses
	}
	stored := func(name string) lockoutRecord {
		var rec lockoutRecord
		if err := r.a.view(ctx, func(tx store.Tx) error {
			var err error
			rec, err = getLockout(tx, kindLogin, name)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	checked, st := guess("alice", 100, 10)
	if checked > lockoutThreshold || int64(st["401"]) != checked || st["401"]+st["429"] != 100 {
		t.Errorf("100 guesses over two replicas: statuses %v, %d password checks; want at most %d checked, the rest 429", st, checked, lockoutThreshold)
	}
	if rec := stored("alice"); int64(rec.Failures) != checked || rec.lockedFor(r.clk.Now()) == 0 {
		t.Errorf("stored lockout %+v after %d checked failures: want them all counted and the account locked", rec, checked)
	}
	for _, s := range []*Service{r.a, r.b} {
		var te *ThrottledError
		if _, err := r.login(s, "alice", alicePw, ""); !errors.As(err, &te) {
			t.Errorf("the right password on a locked account: %v, want throttled", err)
		}
	}
	uc, ust := guess("mallory", 100, 10)
	if uc != checked || ust["401"] != st["401"] || ust["429"] != st["429"] {
		t.Errorf("an unknown name: statuses %v, %d checks; a user: %v, %d — want the same", ust, uc, st, checked)
	}

	total := checked
	for range 5 {
		r.clk.Advance(lockoutMax + time.Second) // every lockout so far has ended
		c, st := guess("alice", 10, 10)
		if c > 1 {
			t.Errorf("10 guesses after a lockout ended: %d reached the check (%v), want at most 1", c, st)
		}
		total += c
	}
	if rec := stored("alice"); int64(rec.Failures) != total {
		t.Errorf("stored failures %d after %d checked attempts: an update was lost", rec.Failures, total)
	}
}

func TestReplicasRefreshRaceBolt(t *testing.T) { raceRefresh(t, boltReplicas(t), 10) }
func TestReplicasCodesRaceBolt(t *testing.T)   { raceCodes(t, boltReplicas(t)) }
func TestReplicasLockoutBolt(t *testing.T)     { raceLockout(t, boltReplicas(t)) }

// staleStore is a store whose feed is never fresh (its listener is down,
// as on a PostgreSQL replica cut off from its notifications), and which
// can be made unreadable: the fault PostgreSQL gives for real in pg_test.go,
// made here on bbolt, which has no feed to lose.
type staleStore struct {
	store.Store
	down atomic.Bool
}

type staleFeed struct{}

func (staleFeed) Subscribe(ctx context.Context, _ func([]store.Change)) error {
	<-ctx.Done()
	return nil
}
func (staleFeed) Fresh(time.Time) bool { return false }

func (s *staleStore) Feed() store.Feed { return staleFeed{} }
func (s *staleStore) View(ctx context.Context, fn func(store.Tx) error) error {
	if s.down.Load() {
		return fmt.Errorf("%w: connection refused", store.ErrUnavailable)
	}
	return s.Store.View(ctx, fn)
}

// TestStaleFeedReadsTheStore: a replica whose feed is not fresh does not
// trust its index: a logout, a password change or a disable made by
// another replica holds on it at once, and when the store cannot be read
// it answers ErrUnavailable (the gateway's 503), never the cached token.
func TestStaleFeedReadsTheStore(t *testing.T) {
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	st := boltstore.New(db)
	stale := &staleStore{Store: st}
	r := openReplicas(t, st, stale, false)
	ctx := context.Background()
	for _, n := range []string{"alice", "bob", "carol"} {
		if err := r.a.AddUser(ctx, n, []string{"system:read"}, alicePw); err != nil {
			t.Fatal(err)
		}
	}
	sa, err := r.login(r.a, "alice", alicePw, "") // issued on A: B caches it when it reads it
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := r.login(r.b, "bob", alicePw, "") // issued on B: in B's index
	sc, _ := r.login(r.b, "carol", alicePw, "")
	for _, tok := range []string{sa.Token, sb.Token, sc.Token} {
		if p, err := r.b.AuthenticateToken(ctx, tok); err != nil || p == nil {
			t.Fatalf("B before any change: %v", err)
		}
	}
	if err := r.a.Logout(ctx, sa.Token, "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if err := r.a.SetPassword(ctx, "bob", alicePw, "another long passphrase", "", "", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if err := r.a.Disable(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	for what, tok := range map[string]string{"logout": sa.Token, "password change": sb.Token, "disable": sc.Token} {
		if _, err := r.b.AuthenticateToken(ctx, tok); !errors.Is(err, authz.ErrInvalidToken) {
			t.Errorf("B after a %s on A: %v, want ErrInvalidToken", what, err)
		}
	}
	s2, _ := r.login(r.a, "alice", alicePw, "")
	stale.down.Store(true)
	if p, err := r.b.AuthenticateToken(ctx, s2.Token); !errors.Is(err, ErrUnavailable) || p != nil {
		t.Errorf("B with the store down: %v %v, want ErrUnavailable", p, err)
	}
	if p, err := r.a.AuthenticateToken(ctx, s2.Token); err != nil || p == nil {
		t.Errorf("A (fresh) with B's store wrapper down: %v", err)
	}
}

// raceCeremony: a passkey ceremony begun on one replica can be finished on
// either, once: of 8 racers taking it across both, one gets it; a tampered,
// expired or other-kind ID gets nothing.
func raceCeremony(t *testing.T, r *replicas) {
	ctx := context.Background()
	for _, s := range []*Service{r.a, r.b} {
		if err := s.EnablePasskeys("https://hearth.home.arpa", ""); err != nil {
			t.Fatal(err)
		}
	}
	o, err := r.a.BeginPasskeyLogin(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	errs := race(8, func(j int) error {
		c, err := r.pick(j).takeCeremony(ctx, o.Ceremony, "login")
		if err == nil && c == nil {
			err = ErrInvalidCredentials
		}
		if c != nil && c.User != "alice" {
			t.Errorf("ceremony for %q, want alice", c.User)
		}
		return err
	})
	oneWinner(t, "passkey ceremony", errs)
	o2, _ := r.b.BeginPasskeyLogin(ctx, "")
	tampered := []byte(o2.Ceremony)
	tampered[len(tampered)/2] ^= 1
	for what, id := range map[string]string{"tampered": string(tampered), "truncated": o2.Ceremony[:40], "empty": ""} {
		if c, err := r.a.takeCeremony(ctx, id, "login"); c != nil || err != nil {
			t.Errorf("%s ceremony: %v %v, want nothing", what, c, err)
		}
	}
	if c, _ := r.a.takeCeremony(ctx, o2.Ceremony, "second"); c != nil {
		t.Error("a login ceremony taken as a second-factor one")
	}
	r.clk.Advance(passkeyCeremonyTTL)
	if c, _ := r.a.takeCeremony(ctx, o2.Ceremony, "login"); c != nil {
		t.Error("an expired ceremony was taken")
	}
}

func TestReplicasCeremonyBolt(t *testing.T) { raceCeremony(t, boltReplicas(t)) }

// FuzzTakeCeremony: a presented ceremony ID is untrusted; only the exact
// sealed ID handed out opens.
func FuzzTakeCeremony(f *testing.F) {
	s := fuzzService(f)
	if err := s.EnablePasskeys("https://hearth.home.arpa", ""); err != nil {
		f.Fatal(err)
	}
	o, err := s.BeginPasskeyLogin(context.Background(), "alice")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(o.Ceremony)
	f.Add(o.Ceremony[:len(o.Ceremony)-1] + "A")
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, id string) {
		c, err := s.takeCeremony(context.Background(), id, "login")
		if err != nil {
			t.Fatalf("takeCeremony: %v", err)
		}
		if c != nil && id != o.Ceremony {
			t.Errorf("ceremony %q opened though it was not handed out", id)
		}
	})
}

// TestStaleFeedListsSessionsFromTheStore: a replica whose feed is not
// fresh lists a user's sessions, and lets her end one, from the store: a
// session started on another replica is there, one ended there is not.
func TestStaleFeedListsSessionsFromTheStore(t *testing.T) {
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	st := boltstore.New(db)
	r := openReplicas(t, st, &staleStore{Store: st}, false)
	ctx := context.Background()
	if err := r.a.AddUser(ctx, "alice", []string{"system:read"}, alicePw); err != nil {
		t.Fatal(err)
	}
	onB, _ := r.login(r.b, "alice", alicePw, "")
	onA, _ := r.login(r.a, "alice", alicePw, "") // B's index never hears of it
	ended, _ := r.login(r.b, "alice", alicePw, "")
	if err := r.b.Logout(ctx, ended.Token, "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	fam := func(tok string) string {
		_, f, ok := r.b.tokenFamily(ctx, tok)
		if !ok && tok != ended.Token {
			t.Fatalf("B does not find the family of a live token")
		}
		return f
	}
	got := map[string]bool{}
	for _, si := range r.b.Sessions(ctx, "alice", onB.Token) {
		got[si.Family] = true
	}
	if !got[fam(onB.Token)] || !got[fam(onA.Token)] || len(got) != 2 {
		t.Errorf("sessions listed on B: %v, want exactly the two live ones (one started on A)", got)
	}
	if err := r.b.EndSession(ctx, "alice", fam(onA.Token), "127.0.0.1:1"); err != nil {
		t.Errorf("ending on B the session started on A: %v", err)
	}
	if _, err := r.b.AuthenticateToken(ctx, onA.Token); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("the ended session's token on B: %v, want refused", err)
	}
}

// laggingStore is a store whose feed is fresh but has not delivered yet:
// another replica's change is on its way. It counts the Views.
type laggingStore struct {
	store.Store
	views atomic.Int64
}

type laggingFeed struct{ staleFeed }

func (laggingFeed) Fresh(time.Time) bool { return true }

func (s *laggingStore) Feed() store.Feed { return laggingFeed{} }
func (s *laggingStore) View(ctx context.Context, fn func(store.Tx) error) error {
	s.views.Add(1)
	return s.Store.View(ctx, fn)
}

// TestTokenIssuedElsewhereBeforeTheFeed: a token another replica issued a
// moment ago works at once, before the feed brings it (a miss is looked up
// in the store), while a flood of invented tokens costs at most
// missReadRate store reads (the burst) and is refused.
func TestTokenIssuedElsewhereBeforeTheFeed(t *testing.T) {
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	st := boltstore.New(db)
	lag := &laggingStore{Store: st}
	r := openReplicas(t, st, lag, false)
	ctx := context.Background()
	if err := r.a.AddUser(ctx, "alice", []string{"system:read"}, alicePw); err != nil {
		t.Fatal(err)
	}
	sess, err := r.login(r.a, "alice", alicePw, "")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := r.b.AuthenticateToken(ctx, sess.Token); err != nil || p.ID != "user:alice" {
		t.Fatalf("B, a moment after A issued the token: %v %v, want user:alice", p, err)
	}
	before := lag.views.Load()
	if _, err := r.b.AuthenticateToken(ctx, sess.Token); err != nil || lag.views.Load() != before {
		t.Errorf("the second check: %v, %d store reads; want it from the index", err, lag.views.Load()-before)
	}
	start := time.Now()
	for i := range 3 * missReadRate {
		tok := fmt.Sprintf("%s%043d", AccessTokenPrefix, i)
		if _, err := r.b.AuthenticateToken(ctx, tok); !errors.Is(err, authz.ErrInvalidToken) {
			t.Fatalf("an invented token: %v", err)
		}
	}
	// The burst, plus what the rate refilled while the loop ran.
	limit := int64(missReadRate + float64(missReadRate)*time.Since(start).Seconds() + 1)
	if n := lag.views.Load() - before; n > limit {
		t.Errorf("%d invented tokens cost %d store reads, want at most %d", 3*missReadRate, n, limit)
	}
}
