package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/hotp"
	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"

	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

func TestLoginIssuesToken(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice", "system:read")
	a := h.mustLogin("alice", alicePw)
	if !strings.HasPrefix(a.Token, AccessTokenPrefix) || !strings.HasPrefix(a.RefreshToken, RefreshTokenPrefix) {
		t.Errorf("tokens %q, %q lack their prefixes", a.Token, a.RefreshToken)
	}
	if want := h.clk.Now().Add(time.Hour); !a.ExpiresAt.Equal(want) {
		t.Errorf("expires_at = %v, want %v", a.ExpiresAt, want)
	}
	if got := capsString(a.Capabilities); got != "conversations:read,status" {
		t.Errorf("capabilities = %s, want conversations:read,status", got)
	}
	p, err := h.s.AuthenticateToken(context.Background(), a.Token)
	if err != nil {
		t.Fatalf("AuthenticateToken: %v", err)
	}
	if p.ID != "user:alice" || p.Kind != "user" || p.Method != "token" || p.MFA || !p.AuthTime.Equal(h.clk.Now()) || p.Zone != "" {
		t.Errorf("principal = %+v", p)
	}
	// Nothing secret reaches the audit trail.
	for _, e := range h.rec.all() {
		s := fmt.Sprintf("%+v", e)
		for _, secret := range []string{alicePw, a.Token, a.RefreshToken, a.Token[len(AccessTokenPrefix):]} {
			if strings.Contains(s, secret) {
				t.Errorf("audit event %s carries a secret", s)
			}
		}
	}
	names := strings.Join(h.rec.names(), " ")
	if !strings.Contains(names, "auth.login/success token.issue/success") {
		t.Errorf("audit events %s, want auth.login then token.issue", names)
	}
	for _, e := range h.rec.all() {
		if e.Name == audit.EventTokenIssue && (e.Principal != "user:alice" || e.Resource != "user:alice" || len(e.Meta["token_id"]) != 12) {
			t.Errorf("token.issue event %+v: want by and for user:alice, with a token id", e)
		}
	}
}

func TestUserNameIsCaseInsensitiveAndAuditedAnonymously(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	h.mustLogin(" Alice", alicePw)
	h.login("ALICE", "wrong password, typed")
	evs := h.rec.all()
	last := evs[len(evs)-1]
	if last.Name != audit.EventAuthLogin || last.Outcome != audit.OutcomeFailure || last.Principal != "" || last.Resource != "user:alice" || last.Client == "" {
		t.Errorf("failed login event = %+v, want no principal, resource user:alice and the client address", last)
	}
	us, _ := h.s.ListUsers(context.Background())
	if us[0].Failures != 1 {
		t.Errorf("failures = %d, want 1 (counted under the canonical name)", us[0].Failures)
	}
}

func TestScopeNarrowsToken(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice", "system:read")
	r := h.post("/.hearth/v1/auth/login", map[string]any{"username": "alice", "password": alicePw, "scope": []string{"status", "plugins:install"}})
	var a loginAnswer
	r.json(t, &a)
	if r.status != 200 || capsString(a.Capabilities) != "status" {
		t.Errorf("scoped login = %d %s, want 200 with only status (never more than the user has)", r.status, r.body)
	}
	r = h.post("/.hearth/v1/auth/login", map[string]any{"username": "alice", "password": alicePw, "scope": []string{"no:such"}})
	if r.status != 400 {
		t.Errorf("login with unknown scope = %d, want 400", r.status)
	}
}

func TestLockoutDoublingAndReset(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	wantStatus := func(step string, r response, status int, retry string) {
		t.Helper()
		if r.status != status || r.header.Get("Retry-After") != retry {
			t.Fatalf("%s: %d Retry-After %q (%s), want %d Retry-After %q", step, r.status, r.header.Get("Retry-After"), r.body, status, retry)
		}
	}
	for i := 1; i <= 5; i++ {
		wantStatus(fmt.Sprintf("failure %d", i), h.login("alice", "wrong password, attempt"), 401, "")
	}
	// Locked for a minute: even the right password is refused with 429.
	wantStatus("right password while locked", h.login("alice", alicePw), 429, "60")
	h.clk.Advance(30 * time.Second)
	wantStatus("30s later", h.login("alice", alicePw), 429, "30")
	// Each further failure doubles the lockout: 2, 4, 8 … minutes, capped at an hour.
	lock := time.Minute
	for i := 0; i < 8; i++ {
		h.clk.Advance(lock)
		wantStatus(fmt.Sprintf("failure after %s lockout", lock), h.login("alice", "still wrong, sadly"), 401, "")
		lock = min(2*lock, time.Hour)
		wantStatus(fmt.Sprintf("locked %s", lock), h.login("alice", alicePw), 429, fmt.Sprint(int(lock.Seconds())))
	}
	if lock != time.Hour {
		t.Fatalf("lockout grew to %s, want capped at 1h", lock)
	}
	h.clk.Advance(lock)
	h.mustLogin("alice", alicePw)
	// A success resets the count: four failures lock nothing.
	for i := 1; i <= 4; i++ {
		wantStatus(fmt.Sprintf("failure %d after success", i), h.login("alice", "wrong again"), 401, "")
	}
	h.mustLogin("alice", alicePw)
	names := strings.Join(h.rec.names(), " ")
	if !strings.Contains(names, "auth.lockout/success") {
		t.Errorf("no auth.lockout event in %s", names)
	}
}

func TestHundredFailuresDisablePasswordLogin(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	for i := 1; i <= disableThreshold; i++ {
		if r := h.login("alice", "wrong password here"); r.status != 401 {
			t.Fatalf("failure %d = %d, want 401", i, r.status)
		}
		h.clk.Advance(time.Hour)
	}
	h.clk.Advance(24 * time.Hour)
	if r := h.login("alice", alicePw); r.status != 429 {
		t.Fatalf("right password after 100 failures = %d, want 429 until unlocked", r.status)
	}
	if err := h.s.Unlock(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	h.mustLogin("alice", alicePw)
}

// TestNoEnumeration: unknown user, wrong password, disabled user, user
// without a password and a missing TOTP code answer alike, each after one
// argon2id evaluation; a locked real name and a locked unknown name answer
// alike too.
func TestNoEnumeration(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	h.addUser("alice")
	h.addUser("bob")
	if err := h.s.Disable(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := h.s.AddUser(ctx, "carol", []string{"status"}, ""); err != nil {
		t.Fatal(err)
	}
	h.addUser("dave")
	secret, _, err := h.s.EnrollTOTP(ctx, "dave")
	if err != nil {
		t.Fatal(err)
	}
	code, _ := hotp.GenerateCodeCustom(secret, uint64(h.clk.Now().Unix())/30, totpOpts)
	if err := h.s.ConfirmTOTP(ctx, "dave", code); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, user, pw string }{
		{"unknown user", "mallory", alicePw},
		{"wrong password", "alice", "not the password at all"},
		{"disabled user", "bob", alicePw},
		{"no password set", "carol", alicePw},
		{"right password, no TOTP code", "dave", alicePw},
		{"malformed name", "Robert'); DROP", alicePw},
	}
	var first response
	for i, c := range cases {
		before := h.s.hasher.evals.Load()
		r := h.login(c.user, c.pw)
		if evals := h.s.hasher.evals.Load() - before; evals != 1 {
			t.Errorf("%s: %d argon2id evaluations, want 1", c.name, evals)
		}
		if r.status != 401 {
			t.Errorf("%s: status %d, want 401", c.name, r.status)
		}
		if i == 0 {
			first = r
		} else if !bytes.Equal(r.body, first.body) {
			t.Errorf("%s: body %q differs from %q", c.name, r.body, first.body)
		}
	}
	// Lock a real and an unknown name the same way: identical answers.
	h.addUser("erin")
	var answers [2][]string
	for i, user := range []string{"erin", "nobody-here"} {
		for k := 0; k < 7; k++ {
			before := h.s.hasher.evals.Load()
			r := h.login(user, "wrong password for sure")
			answers[i] = append(answers[i], fmt.Sprintf("%d %s %s evals=%d", r.status, r.header.Get("Retry-After"), r.body, h.s.hasher.evals.Load()-before))
		}
	}
	if strings.Join(answers[0], "\n") != strings.Join(answers[1], "\n") {
		t.Errorf("locked real vs unknown name differ:\n%s\nvs\n%s", strings.Join(answers[0], "\n"), strings.Join(answers[1], "\n"))
	}
	if !strings.HasPrefix(answers[0][5], "429 60 ") || !strings.HasSuffix(answers[0][5], "evals=0") {
		t.Errorf("sixth attempt = %s, want 429 Retry-After 60 without hashing", answers[0][5])
	}
}

func TestClientBucketAgainstSpraying(t *testing.T) {
	h := newHarness(t, Config{ClientBurst: 3, ClientRefill: "10s"})
	h.addUser("alice")
	for i, u := range []string{"a1", "a2", "a3"} {
		if r := h.login(u, "spray spray spray"); r.status != 401 {
			t.Fatalf("attempt %d = %d, want 401", i, r.status)
		}
	}
	r := h.login("alice", alicePw)
	if r.status != 429 || r.header.Get("Retry-After") != "10" {
		t.Fatalf("fourth attempt from one address = %d Retry-After %q, want 429 10", r.status, r.header.Get("Retry-After"))
	}
	h.clk.Advance(10 * time.Second)
	h.mustLogin("alice", alicePw)
	// The success gave its attempt back.
	if r := h.login("a4", "spray spray spray"); r.status != 401 {
		t.Fatalf("attempt after refund = %d, want 401", r.status)
	}
}

func TestOversizedPasswordRefusedBeforeHashing(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	cases := []struct {
		name string
		pw   string
	}{
		{"1 MiB body", strings.Repeat("x", 1<<20)},
		{"1025-byte password", strings.Repeat("x", MaxPasswordBytes+1)},
	}
	for _, c := range cases {
		before := h.s.hasher.evals.Load()
		r := h.login("alice", c.pw)
		if r.status != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: status %d, want 413", c.name, r.status)
		}
		if n := h.s.hasher.evals.Load() - before; n != 0 {
			t.Errorf("%s: %d argon2id evaluations, want 0", c.name, n)
		}
	}
	// 64 characters and more are allowed (NIST SP 800-63B-4).
	long := strings.Repeat("long passphrase ", 64)[:1000]
	if err := h.s.AddUser(context.Background(), "eve", []string{"status"}, long); err != nil {
		t.Fatalf("AddUser with a 1000-byte password: %v", err)
	}
	h.mustLogin("eve", long)
	if r := h.login("eve", long[:999]); r.status != 401 {
		t.Errorf("login with the password truncated = %d, want 401 (no truncation)", r.status)
	}
}

func TestLogoutRevokesFamily(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	a := h.mustLogin("alice", alicePw)
	other := h.mustLogin("alice", alicePw)
	if r := h.do("POST", "/.hearth/v1/auth/logout", nil, a.Token); r.status != 204 {
		t.Fatalf("logout = %d %s, want 204", r.status, r.body)
	}
	if _, err := h.s.AuthenticateToken(context.Background(), a.Token); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("token after logout: %v, want ErrInvalidToken", err)
	}
	if r := h.post("/.hearth/v1/auth/refresh", map[string]string{"refresh_token": a.RefreshToken}); r.status != 401 {
		t.Errorf("refresh after logout = %d, want 401", r.status)
	}
	if r := h.do("POST", "/.hearth/v1/auth/logout", nil, a.Token); r.status != 401 {
		t.Errorf("second logout = %d, want 401", r.status)
	}
	if _, err := h.s.AuthenticateToken(context.Background(), other.Token); err != nil {
		t.Errorf("another session of the same user died with the logout: %v", err)
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	a := h.mustLogin("alice", alicePw)
	h.clk.Advance(50 * time.Minute)
	r := h.post("/.hearth/v1/auth/refresh", map[string]string{"refresh_token": a.RefreshToken})
	if r.status != 200 {
		t.Fatalf("refresh = %d %s", r.status, r.body)
	}
	var b loginAnswer
	r.json(t, &b)
	if b.RefreshToken == a.RefreshToken || b.Token == a.Token {
		t.Fatal("refresh did not rotate the tokens")
	}
	p, err := h.s.AuthenticateToken(context.Background(), b.Token)
	if err != nil {
		t.Fatal(err)
	}
	if want := h.clk.Now().Add(-50 * time.Minute); !p.AuthTime.Equal(want) {
		t.Errorf("refreshed AuthTime = %v, want the login time %v", p.AuthTime, want)
	}
	// The old refresh token again: reuse revokes the whole family.
	if r := h.post("/.hearth/v1/auth/refresh", map[string]string{"refresh_token": a.RefreshToken}); r.status != 401 {
		t.Fatalf("reused refresh = %d, want 401", r.status)
	}
	if _, err := h.s.AuthenticateToken(context.Background(), b.Token); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("family's access token after reuse: %v, want ErrInvalidToken", err)
	}
	if r := h.post("/.hearth/v1/auth/refresh", map[string]string{"refresh_token": b.RefreshToken}); r.status != 401 {
		t.Errorf("family's newest refresh token after reuse = %d, want 401", r.status)
	}
}

func TestTokenExpiryAndIdle(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	ctx := context.Background()
	a := h.mustLogin("alice", alicePw)
	// Used every 29 minutes, it lives until its absolute hour.
	h.clk.Advance(29 * time.Minute)
	if _, err := h.s.AuthenticateToken(ctx, a.Token); err != nil {
		t.Fatalf("at 29m: %v", err)
	}
	h.clk.Advance(29 * time.Minute)
	if _, err := h.s.AuthenticateToken(ctx, a.Token); err != nil {
		t.Fatalf("at 58m: %v", err)
	}
	h.clk.Advance(2 * time.Minute)
	if _, err := h.s.AuthenticateToken(ctx, a.Token); !errors.Is(err, authz.ErrInvalidToken) {
		t.Fatalf("at 60m: %v, want expired", err)
	}
	b := h.mustLogin("alice", alicePw)
	h.clk.Advance(31 * time.Minute)
	if _, err := h.s.AuthenticateToken(ctx, b.Token); !errors.Is(err, authz.ErrInvalidToken) {
		t.Fatalf("after 31 idle minutes: %v, want expired", err)
	}
}

func TestTokensSurviveRestartAndIdleIsFlushed(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	ctx := context.Background()
	a := h.mustLogin("alice", alicePw)
	h.clk.Advance(20 * time.Minute)
	if _, err := h.s.AuthenticateToken(ctx, a.Token); err != nil {
		t.Fatal(err)
	}
	if err := h.s.flush(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(boltstore.New(h.db), Config{Argon2: tinyArgon2}, Options{Now: h.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	h.clk.Advance(20 * time.Minute) // 40m after login, 20m after last use
	if _, err := s2.AuthenticateToken(ctx, a.Token); err != nil {
		t.Fatalf("token after restart: %v (idle timestamp not flushed?)", err)
	}
}

func TestAuditFailureChangesNothing(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	ctx := context.Background()
	h.rec.setFail(true)
	if r := h.login("alice", alicePw); r.status != 503 {
		t.Errorf("login with a broken audit log = %d, want 503", r.status)
	}
	if r := h.login("alice", "wrong password again"); r.status != 503 {
		t.Errorf("failed login with a broken audit log = %d, want 503", r.status)
	}
	if err := h.s.AddUser(ctx, "bob", []string{"status"}, alicePw); !errors.Is(err, ErrUnavailable) {
		t.Errorf("AddUser with a broken audit log: %v, want ErrUnavailable", err)
	}
	h.s.mu.RLock()
	n := len(h.s.tokens)
	h.s.mu.RUnlock()
	if n != 0 {
		t.Errorf("%d tokens issued while the audit log was down", n)
	}
	h.rec.setFail(false)
	if r := h.login("bob", alicePw); r.status != 401 {
		t.Errorf("bob exists after a failed audit: login = %d, want 401", r.status)
	}
	a := h.mustLogin("alice", alicePw)
	h.rec.setFail(true)
	if r := h.do("POST", "/.hearth/v1/auth/logout", nil, a.Token); r.status != 503 {
		t.Errorf("logout with a broken audit log = %d, want 503", r.status)
	}
	if _, err := h.s.AuthenticateToken(ctx, a.Token); err != nil {
		t.Errorf("token after a refused logout: %v (nothing should have changed)", err)
	}
}

func TestParamsUpgradedOnLogin(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	defer db.Close()
	clk := &fakeClock{t: time.Now()}
	ctx := context.Background()
	old := Argon2Params{Time: 1, MemoryKiB: 1024, Threads: 1}
	s1, err := Open(boltstore.New(db), Config{Argon2: old}, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.AddUser(ctx, "alice", []string{"status"}, alicePw); err != nil {
		t.Fatal(err)
	}
	s1.Close()
	cur := Argon2Params{Time: 2, MemoryKiB: minArgon2MemoryKiB, Threads: 2}
	s2, err := Open(boltstore.New(db), Config{Argon2: cur}, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	hashOf := func() phc {
		t.Helper()
		var p phc
		err := boltstore.New(db).View(ctx, func(tx store.Tx) error {
			u, err := getUser(tx, "alice")
			if err != nil {
				return err
			}
			p, err = parsePHC(u.Hash)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if got := hashOf().params; got != old {
		t.Fatalf("stored params = %+v, want %+v", got, old)
	}
	if _, err := s2.Login(ctx, LoginRequest{Username: "alice", Password: alicePw, Client: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if got := hashOf(); got.params != cur || len(got.salt) != saltLen {
		t.Fatalf("after login stored params = %+v, want %+v", got.params, cur)
	}
	if _, err := s2.Login(ctx, LoginRequest{Username: "alice", Password: alicePw, Client: "127.0.0.1:1"}); err != nil {
		t.Fatalf("login with the upgraded hash: %v", err)
	}
	if n := s2.hasher.evals.Load(); n != 3 {
		t.Errorf("%d argon2id evaluations, want 3 (verify, rehash, verify)", n)
	}
}

func TestTOTPCodeUsableOnce(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	h.addUser("alice")
	secret, url, err := h.s.EnrollTOTP(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(url, "otpauth://totp/hearth:alice?") {
		t.Errorf("url = %s", url)
	}
	code := func(offset int) string {
		c, _ := hotp.GenerateCodeCustom(secret, uint64(h.clk.Now().Unix()/30+int64(offset)), totpOpts)
		return c
	}
	if err := h.s.ConfirmTOTP(ctx, "alice", "000000"+""); err == nil && code(0) != "000000" {
		t.Fatal("ConfirmTOTP accepted a wrong code")
	}
	if err := h.s.ConfirmTOTP(ctx, "alice", code(0)); err != nil {
		t.Fatal(err)
	}
	login := func(c string) response {
		return h.post("/.hearth/v1/auth/login", map[string]any{"username": "alice", "password": alicePw, "totp": c})
	}
	// The confirmation code's step is spent.
	if r := login(code(0)); r.status != 401 {
		t.Errorf("login with the confirmation code = %d, want 401", r.status)
	}
	h.clk.Advance(30 * time.Second)
	r := login(code(0))
	if r.status != 200 {
		t.Fatalf("login with a fresh code = %d %s", r.status, r.body)
	}
	var a loginAnswer
	r.json(t, &a)
	if !a.MFA {
		t.Error("login with TOTP: mfa false")
	}
	if p, _ := h.s.AuthenticateToken(ctx, a.Token); p == nil || !p.MFA {
		t.Errorf("principal = %+v, want MFA", p)
	}
	if r := login(code(0)); r.status != 401 {
		t.Errorf("the same code again = %d, want 401", r.status)
	}
	// A second factor lowers the length rule to 8.
	if err := CheckPassword("gr8 kite", "alice", true); err != nil {
		t.Errorf("8 characters with a second factor: %v", err)
	}
}

func TestRecoveryCodeOnceAndEndsSessions(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	h.addUser("alice")
	codes, err := h.s.RegenerateRecoveryCodes(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != RecoveryCodeCount {
		t.Fatalf("%d codes, want %d", len(codes), RecoveryCodeCount)
	}
	a := h.mustLogin("alice", alicePw)
	// Lock the account first: recovery stays possible.
	for i := 0; i < 6; i++ {
		h.login("alice", "a wrong password here")
	}
	newPw := "a brand new passphrase for alice"
	rec := func(code string) response {
		return h.post("/.hearth/v1/auth/recover", map[string]string{"username": "alice", "recovery_code": code, "new_password": newPw})
	}
	if r := rec(strings.ToLower(codes[3])); r.status != 204 {
		t.Fatalf("recover = %d %s, want 204", r.status, r.body)
	}
	if _, err := h.s.AuthenticateToken(ctx, a.Token); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("old token after recovery: %v", err)
	}
	if r := h.post("/.hearth/v1/auth/refresh", map[string]string{"refresh_token": a.RefreshToken}); r.status != 401 {
		t.Errorf("old refresh token after recovery = %d", r.status)
	}
	h.mustLogin("alice", newPw) // lockout cleared, new password works
	if r := rec(codes[3]); r.status != 401 {
		t.Errorf("same code again = %d, want 401", r.status)
	}
	if r := rec("ABCD-EFGH-JKMN-PQRS"); r.status != 401 {
		t.Errorf("made-up code = %d, want 401", r.status)
	}
	if r := h.post("/.hearth/v1/auth/recover", map[string]string{"username": "alice", "recovery_code": codes[4], "new_password": "short"}); r.status != 400 {
		t.Errorf("recover with a short password = %d, want 400", r.status)
	}
	us, _ := h.s.ListUsers(ctx)
	if us[0].RecoveryCodesLeft != RecoveryCodeCount-1 {
		t.Errorf("codes left = %d, want %d (a refused password spends no code)", us[0].RecoveryCodesLeft, RecoveryCodeCount-1)
	}
}

func TestRecoveryCodeConcurrentUse(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	h.addUser("alice")
	codes, err := h.s.RegenerateRecoveryCodes(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	statuses := make([]int, 8)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = h.post("/.hearth/v1/auth/recover", map[string]string{
				"username": "alice", "recovery_code": codes[0], "new_password": fmt.Sprintf("concurrent new passphrase %d", i),
			}).status
		}()
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		switch s {
		case 204:
			ok++
		case 401, 429:
		default:
			t.Errorf("status %d", s)
		}
	}
	if ok != 1 {
		t.Fatalf("statuses %v: %d successes, want exactly 1", statuses, ok)
	}
	recovers := 0
	for _, e := range h.rec.all() {
		if e.Name == audit.EventAuthRecover && e.Outcome == audit.OutcomeSuccess {
			recovers++
		}
	}
	if recovers != 1 {
		t.Errorf("%d auth.recover success events, want 1", recovers)
	}
}

func TestPasswordChangeEndsOtherSessions(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	h.addUser("alice")
	a := h.mustLogin("alice", alicePw)
	b := h.mustLogin("alice", alicePw)
	newPw := "another long passphrase"
	if r := h.do("POST", "/.hearth/v1/auth/password", map[string]string{"old_password": "wrong wrong wrong", "new_password": newPw}, a.Token); r.status != 401 {
		t.Errorf("change with wrong old password = %d, want 401", r.status)
	}
	if r := h.do("POST", "/.hearth/v1/auth/password", map[string]string{"old_password": alicePw, "new_password": "password1234567"}, a.Token); r.status != 400 || !strings.Contains(string(r.body), "password_blocklisted") {
		t.Errorf("change to a common password = %d %s, want 400 password_blocklisted", r.status, r.body)
	}
	if r := h.do("POST", "/.hearth/v1/auth/password", map[string]string{"old_password": alicePw, "new_password": newPw}, a.Token); r.status != 204 {
		t.Fatalf("change = %d %s", r.status, r.body)
	}
	if _, err := h.s.AuthenticateToken(ctx, a.Token); err != nil {
		t.Errorf("the changing session ended: %v", err)
	}
	if _, err := h.s.AuthenticateToken(ctx, b.Token); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("other session after change: %v, want revoked", err)
	}
	h.mustLogin("alice", newPw)
}

func TestAuthenticateTokenRejectsJunk(t *testing.T) {
	h := newHarness(t, Config{})
	for _, tok := range []string{"", "hth_at_", "hth_rt_" + strings.Repeat("A", 43), AccessTokenPrefix + strings.Repeat("A", 43), AccessTokenPrefix + strings.Repeat("!", 43)} {
		if _, err := h.s.AuthenticateToken(context.Background(), tok); !errors.Is(err, authz.ErrInvalidToken) {
			t.Errorf("AuthenticateToken(%q) = %v, want ErrInvalidToken", tok, err)
		}
	}
}

func FuzzAuthenticateToken(f *testing.F) {
	f.Add(AccessTokenPrefix + strings.Repeat("A", 43))
	f.Add("hth_rt_" + strings.Repeat("_", 43))
	f.Add("")
	db := openDB(f, f.TempDir())
	defer db.Close()
	s, err := Open(boltstore.New(db), Config{Argon2: tinyArgon2}, Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	f.Fuzz(func(t *testing.T, tok string) {
		if p, err := s.AuthenticateToken(context.Background(), tok); err == nil || p != nil {
			t.Errorf("AuthenticateToken(%q) authenticated %v with an empty index", tok, p)
		}
	})
}

func TestLockoutSurvivesRestart(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	for i := 0; i < 6; i++ {
		h.login("alice", "wrong password here")
	}
	if err := h.s.Close(); err != nil { // flushes throttling state
		t.Fatal(err)
	}
	s2, err := Open(boltstore.New(h.db), Config{Argon2: tinyArgon2}, Options{Now: h.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	_, err = s2.Login(context.Background(), LoginRequest{Username: "alice", Password: alicePw, Client: "127.0.0.1:9"})
	var te *ThrottledError
	if !errors.As(err, &te) || te.RetryAfter != time.Minute {
		t.Fatalf("login after restart: %v, want throttled for the 1m lockout", err)
	}
}

func TestRecoveryWithBrokenAuditSpendsNothing(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	h.addUser("alice")
	codes, err := h.s.RegenerateRecoveryCodes(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	h.rec.setFail(true)
	body := map[string]string{"username": "alice", "recovery_code": codes[0], "new_password": "a brand new passphrase"}
	if r := h.post("/.hearth/v1/auth/recover", body); r.status != 503 {
		t.Fatalf("recover with a broken audit log = %d %s, want 503", r.status, r.body)
	}
	h.rec.setFail(false)
	h.mustLogin("alice", alicePw) // password unchanged
	if r := h.post("/.hearth/v1/auth/recover", body); r.status != 204 {
		t.Fatalf("recover once the log is back = %d %s, want 204 (code unspent)", r.status, r.body)
	}
}

// TestConcurrentGuessesCannotOutrunLockout: attempts being checked count
// as pending failures, so a burst of parallel guesses at one name gets no
// more tries than the schedule allows one at a time.
func TestConcurrentGuessesCannotOutrunLockout(t *testing.T) {
	// Slow enough hashing (16 MiB) that the burst arrives while the first
	// checks still run.
	h := newHarness(t, Config{Argon2: Argon2Params{Time: 1, MemoryKiB: 16 << 10, Threads: 1}, MaxConcurrentHashes: 1, HashQueue: 64})
	h.addUser("alice")
	h.login("alice", "one wrong password") // four tries left before the lockout
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	before := h.s.hasher.evals.Load()
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := h.login("alice", fmt.Sprintf("parallel guess %d", i))
			mu.Lock()
			statuses[r.status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if n := h.s.hasher.evals.Load() - before; n > 4 || statuses[401] > 4 || statuses[401]+statuses[429] != 40 {
		t.Errorf("40 parallel guesses: statuses %v, %d password checks; want at most 4 checked, the rest 429", statuses, n)
	}
}

func TestFlushPurgesExpiredTokens(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	h.mustLogin("alice", alicePw)
	count := func(b string) int {
		n := 0
		h.db.View(func(tx *bbolt.Tx) error { n = tx.Bucket([]byte(b)).Stats().KeyN; return nil })
		return n
	}
	if count(bucketTokens) != 1 || count(bucketRefresh) != 1 {
		t.Fatalf("stored %d access, %d refresh tokens; want 1, 1", count(bucketTokens), count(bucketRefresh))
	}
	h.clk.Advance(DefaultRefreshLifetime + time.Minute)
	if err := h.s.flush(); err != nil {
		t.Fatal(err)
	}
	if count(bucketTokens) != 0 || count(bucketRefresh) != 0 {
		t.Errorf("after expiry stored %d access, %d refresh tokens; want none", count(bucketTokens), count(bucketRefresh))
	}
}

// TestLockoutRecordsAreBounded: the lockout records of names that are not
// users go a day after their last failure, and beyond maxTrackedNames the
// oldest go first; a user's record is never pruned.
func TestLockoutRecordsAreBounded(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	ctx := context.Background()
	now := h.clk.Now()
	err := h.s.update(ctx, func(tx store.Tx) error {
		if err := putLockout(tx, kindLogin, "alice", lockoutRecord{Failures: 7, LockedUntil: now.Add(time.Hour), Last: now.Add(-48 * time.Hour)}); err != nil {
			return err
		}
		if err := putLockout(tx, kindLogin, "old-unknown", lockoutRecord{Failures: 2, Last: now.Add(-25 * time.Hour)}); err != nil {
			return err
		}
		for i := 0; i < maxTrackedNames+500; i++ {
			if err := putLockout(tx, kindLogin, fmt.Sprintf("name-%d", i), lockoutRecord{Failures: 1, Last: now.Add(time.Duration(i) * time.Millisecond)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.s.pruneLockouts(ctx, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := h.s.view(ctx, func(tx store.Tx) error {
		return tx.Bucket(bucketLockout).ForEach(func(k, v []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if n > maxTrackedNames {
		t.Errorf("%d lockout records kept, want at most %d", n, maxTrackedNames)
	}
	d, err := h.s.lockedFor(ctx, kindLogin, "alice", now)
	if err != nil || d != time.Hour {
		t.Errorf("a real user's lockout after a flood of names: %s %v, want 1h (never pruned)", d, err)
	}
	if d, _ := h.s.lockedFor(ctx, kindLogin, "name-100499", now); d != 0 {
		t.Errorf("an unlocked name's record answers locked for %s", d)
	}
	var gone, newest bool
	h.s.view(ctx, func(tx store.Tx) error {
		gone = tx.Bucket(bucketLockout).Get(lockoutKey(kindLogin, "old-unknown")) == nil
		newest = tx.Bucket(bucketLockout).Get(lockoutKey(kindLogin, fmt.Sprintf("name-%d", maxTrackedNames+499))) != nil
		return nil
	})
	if !gone || !newest {
		t.Errorf("a non-user record a day old pruned: %v, the newest kept: %v; want both", gone, newest)
	}
	th := newThrottle(10, time.Second)
	for i := 0; i < maxTrackedAddrs+10; i++ {
		th.takeClient(fmt.Sprintf("10.%d.%d.%d:1", i>>16, i>>8&255, i&255), now)
	}
	if len(th.addrs) > maxTrackedAddrs {
		t.Errorf("%d addresses tracked, want at most %d", len(th.addrs), maxTrackedAddrs)
	}
	if clientKey("[2001:db8::1]:443") != clientKey("[2001:db8::2]:80") || clientKey("[2001:db8:0:1::1]:1") == clientKey("[2001:db8::1]:1") {
		t.Error("IPv6 clients should share a bucket per /64 and only per /64")
	}
	if clientKey("[::ffff:192.0.2.1]:5") != "192.0.2.1" {
		t.Errorf("clientKey of a v4-mapped address = %s", clientKey("[::ffff:192.0.2.1]:5"))
	}
}

func TestTokensNarrowedToCurrentPolicyOnRestartAndRefresh(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	h.addUser("alice", "system:read")
	a := h.mustLogin("alice", alicePw)
	// Restart with system:read shrunk to status alone.
	pol, err := authz.New(authz.Config{Bundles: map[string][]string{"system:read": {"status"}}})
	if err != nil {
		t.Fatal(err)
	}
	h.s.Close()
	s2, err := Open(boltstore.New(h.db), Config{Argon2: tinyArgon2}, Options{Policy: pol, Now: h.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	p, err := s2.AuthenticateToken(ctx, a.Token)
	if err != nil || capsString(p.Caps) != "status" {
		t.Fatalf("token after restart: %v, %v; want only status", p, err)
	}
	sess, err := s2.Refresh(ctx, a.RefreshToken, "127.0.0.1:1")
	if err != nil || capsString(sess.Capabilities) != "status" {
		t.Fatalf("refresh after restart: %v, %v; want only status", sess, err)
	}
}

func TestRefusalsAreRecordedSparingly(t *testing.T) {
	h := newHarness(t, Config{ClientBurst: 2, ClientRefill: "1h"})
	h.addUser("alice")
	for i := 0; i < 50; i++ {
		h.login(fmt.Sprintf("u%d", i), "spraying passwords")
	}
	count := func() (n int, similar string) {
		for _, e := range h.rec.all() {
			if e.Name == audit.EventAuthLogin && strings.HasPrefix(e.Reason, "throttled") {
				n++
				similar = e.Meta["similar_unrecorded"]
			}
		}
		return n, similar
	}
	if n, _ := count(); n != 1 {
		t.Errorf("48 refused attempts within 10s wrote %d audit entries, want 1", n)
	}
	h.clk.Advance(11 * time.Second)
	h.login("u99", "spraying passwords")
	if n, similar := count(); n != 2 || similar != "47" {
		t.Errorf("after 10s: %d entries, similar_unrecorded %q; want 2 and 47", n, similar)
	}
}
