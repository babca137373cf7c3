package auth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-home/hearth/authz"
	"github.com/pquerna/otp/hotp"
)

func TestAdminAddWithoutPasswordAndReset(t *testing.T) {
	h := newHarness(t, Config{})
	r := h.post("/.hearth/v1/admin/users", AddUserRequest{Name: "kid", Caps: []string{"system:read"}})
	if r.status != http.StatusCreated {
		t.Fatalf("add = %d %s", r.status, r.body)
	}
	var a AddUserAnswer
	r.json(t, &a)
	if !strings.HasPrefix(a.ResetCode, ResetCodePrefix) || !a.ResetExpires.Equal(h.clk.Now().Add(DefaultResetLifetime)) {
		t.Fatalf("answer %+v: want a reset code expiring in %s", a, DefaultResetLifetime)
	}
	if r := h.login("kid", alicePw); r.status != 401 {
		t.Errorf("login before a password is set = %d, want 401", r.status)
	}
	reset := func(code, pw string) response {
		return h.post("/.hearth/v1/auth/reset", map[string]string{"username": "kid", "reset_code": code, "new_password": pw})
	}
	if r := reset(a.ResetCode+"x", "my very own passphrase"); r.status != 401 {
		t.Errorf("reset with a wrong code = %d, want 401", r.status)
	}
	if r := reset(a.ResetCode, "my very own passphrase"); r.status != 204 {
		t.Fatalf("reset = %d %s", r.status, r.body)
	}
	h.mustLogin("kid", "my very own passphrase")
	if r := reset(a.ResetCode, "another passphrase here"); r.status != 401 {
		t.Errorf("reset code used twice = %d, want 401", r.status)
	}
	// An expired code is refused.
	r = h.post("/.hearth/v1/admin/users/kid/reset", nil)
	var ra ResetAnswer
	r.json(t, &ra)
	h.clk.Advance(DefaultResetLifetime + time.Second)
	if r := reset(ra.Code, "another passphrase here"); r.status != 401 {
		t.Errorf("expired reset code = %d, want 401", r.status)
	}
}

func TestAdminEndpoints(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	if r := h.post("/.hearth/v1/admin/users", AddUserRequest{Name: "alice", Caps: []string{"system:admin"}, Password: alicePw}); r.status != 201 {
		t.Fatalf("add = %d %s", r.status, r.body)
	}
	cases := []struct {
		name   string
		req    AddUserRequest
		status int
		code   string
	}{
		{"taken", AddUserRequest{Name: "alice", Caps: []string{"status"}, Password: alicePw}, 409, "user_exists"},
		{"bad name", AddUserRequest{Name: "Alice!", Caps: []string{"status"}, Password: alicePw}, 400, "bad_name"},
		{"bad caps", AddUserRequest{Name: "bob", Caps: []string{"root"}, Password: alicePw}, 400, "bad_scope"},
		{"short password", AddUserRequest{Name: "bob", Caps: []string{"status"}, Password: "hunter2hunter2"}, 400, "password_too_short"},
		{"common password", AddUserRequest{Name: "bob", Caps: []string{"status"}, Password: "iloveyouiloveyou"}, 400, "password_blocklisted"},
		{"user name as password", AddUserRequest{Name: "bob", Caps: []string{"status"}, Password: "bobbobbobbob2024"}, 400, "password_context_words"},
	}
	for _, c := range cases {
		r := h.post("/.hearth/v1/admin/users", c.req)
		if r.status != c.status || !strings.Contains(string(r.body), `"code":"`+c.code+`"`) {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.status, r.body, c.status, c.code)
		}
	}
	for i := 0; i < 5; i++ {
		h.login("alice", "wrong password typed")
	}
	r := h.do("GET", "/.hearth/v1/admin/users", nil, "")
	var us []UserInfo
	r.json(t, &us)
	if len(us) != 1 || us[0].Name != "alice" || us[0].Failures != 5 || us[0].LockedUntil == nil || !us[0].PasswordSet {
		t.Fatalf("list = %s", r.body)
	}
	if r := h.post("/.hearth/v1/admin/users/alice/unlock", nil); r.status != 204 {
		t.Fatalf("unlock = %d %s", r.status, r.body)
	}
	a := h.mustLogin("alice", alicePw)
	if r := h.post("/.hearth/v1/admin/users/alice/disable", nil); r.status != 204 {
		t.Fatalf("disable = %d", r.status)
	}
	if _, err := h.s.AuthenticateToken(ctx, a.Token); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("token of a disabled user: %v", err)
	}
	if r := h.login("alice", alicePw); r.status != 401 {
		t.Errorf("disabled user login = %d, want 401", r.status)
	}
	if r := h.post("/.hearth/v1/admin/users/alice/enable", nil); r.status != 204 {
		t.Fatalf("enable = %d", r.status)
	}
	h.mustLogin("alice", alicePw)
	r = h.post("/.hearth/v1/admin/users/alice/recovery-codes", nil)
	var rc struct{ Codes []string }
	r.json(t, &rc)
	if len(rc.Codes) != RecoveryCodeCount || len(rc.Codes[0]) != 19 {
		t.Errorf("recovery codes = %s", r.body)
	}
	if r := h.post("/.hearth/v1/admin/users/nobody/unlock", nil); r.status != 404 {
		t.Errorf("unlock unknown = %d, want 404", r.status)
	}
	r = h.post("/.hearth/v1/admin/users/alice/passwd", PasswdRequest{OldPassword: alicePw, NewPassword: "the new passphrase of alice"})
	if r.status != 204 {
		t.Errorf("passwd = %d %s", r.status, r.body)
	}
	r = h.post("/.hearth/v1/admin/users/alice/totp", nil)
	var ta TOTPAnswer
	r.json(t, &ta)
	if len(ta.Secret) != 32 {
		t.Errorf("totp secret %q: want 160 bits of base32", ta.Secret)
	}
	if r := h.post("/.hearth/v1/admin/users/alice/totp/confirm", map[string]string{"code": "12345"}); r.status != 400 {
		t.Errorf("confirm with a malformed code = %d, want 400", r.status)
	}
	code, _ := hotp.GenerateCodeCustom(ta.Secret, uint64(h.clk.Now().Unix())/30, totpOpts)
	if r := h.post("/.hearth/v1/admin/users/alice/totp/confirm", map[string]string{"code": code}); r.status != 204 {
		t.Fatalf("confirm = %d %s", r.status, r.body)
	}
	if r := h.login("alice", "the new passphrase of alice"); r.status != 401 {
		t.Errorf("login without a code once TOTP is on = %d, want 401", r.status)
	}
	if r := h.post("/.hearth/v1/admin/users/alice/totp/remove", nil); r.status != 204 {
		t.Fatalf("remove = %d %s", r.status, r.body)
	}
	h.mustLogin("alice", "the new passphrase of alice")
}

func TestCreateOwner(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	pw, codes, err := h.s.CreateOwner(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(pw) < 20 || len(codes) != RecoveryCodeCount {
		t.Fatalf("password %d chars, %d codes", len(pw), len(codes))
	}
	for _, e := range h.rec.all() {
		if e.Principal != "user:local" {
			t.Errorf("init event %s by %q, want user:local", e.Name, e.Principal)
		}
	}
	a := h.mustLogin("alice", pw)
	p, _ := h.s.AuthenticateToken(ctx, a.Token)
	if !p.Has("hearth:admin") {
		t.Errorf("owner caps %v lack hearth:admin", p.Caps)
	}
}

func TestIdentities(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	h.addUser("alice")
	h.addUser("bob")
	if err := h.s.LinkIdentity(ctx, "alice", "https://id.example", "123"); err != nil {
		t.Fatal(err)
	}
	if err := h.s.LinkIdentity(ctx, "alice", "https://id.example", "123"); err != nil {
		t.Errorf("linking again: %v, want idempotent", err)
	}
	if err := h.s.LinkIdentity(ctx, "bob", "https://id.example", "123"); !errors.Is(err, ErrIdentityLinked) {
		t.Errorf("linking to another user: %v", err)
	}
	if err := h.s.LinkIdentity(ctx, "nobody", "https://id.example", "9"); !errors.Is(err, ErrNoUser) {
		t.Errorf("linking to a missing user: %v", err)
	}
	if u, err := h.s.UserForIdentity(ctx, "https://id.example", "123"); err != nil || u != "alice" {
		t.Errorf("UserForIdentity = %q, %v", u, err)
	}
	if _, err := h.s.UserForIdentity(ctx, "https://other.example", "123"); !errors.Is(err, ErrNoUser) {
		t.Errorf("other issuer: %v, want ErrNoUser", err)
	}
	sess, err := h.s.IssueSession(ctx, "alice", "oidc", true, "127.0.0.1:5")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := h.s.AuthenticateToken(ctx, sess.Token); err != nil || !p.MFA {
		t.Errorf("OIDC session principal %+v, %v", p, err)
	}
}

func TestSessionsPerUserAreCapped(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	h.addUser("alice")
	first, err := h.s.IssueSession(ctx, "alice", "password", false, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	h.clk.Advance(time.Second)
	second, _ := h.s.IssueSession(ctx, "alice", "password", false, "127.0.0.1:1")
	for i := 2; i < MaxSessionsPerUser; i++ {
		h.clk.Advance(time.Second)
		if _, err := h.s.IssueSession(ctx, "alice", "password", false, "127.0.0.1:1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.s.AuthenticateToken(ctx, first.Token); err != nil {
		t.Fatalf("session 1 of %d ended: %v", MaxSessionsPerUser, err)
	}
	h.clk.Advance(time.Second)
	h.mustLogin("alice", alicePw) // one more than the cap
	if _, err := h.s.AuthenticateToken(ctx, first.Token); !errors.Is(err, authz.ErrInvalidToken) {
		t.Errorf("oldest session after the cap: %v, want ended", err)
	}
	if _, err := h.s.AuthenticateToken(ctx, second.Token); err != nil {
		t.Errorf("second-oldest session ended too: %v", err)
	}
	h.s.mu.RLock()
	n := len(h.s.tokens)
	h.s.mu.RUnlock()
	if n != MaxSessionsPerUser {
		t.Errorf("%d live tokens, want %d", n, MaxSessionsPerUser)
	}
}

// TestDisableRacingLogins: however logins and a disable interleave, once
// the user is disabled no token of theirs is left in the index (the index
// changes inside the store's transaction, so a revocation cannot miss a
// token being issued).
func TestDisableRacingLogins(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	h.addUser("alice")
	for round := 0; round < 20; round++ {
		if err := h.s.Enable(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.s.IssueSession(ctx, "alice", "password", false, "127.0.0.1:1")
			}()
		}
		if err := h.s.Disable(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		h.s.mu.RLock()
		for _, lt := range h.s.tokens {
			if lt.user == "alice" {
				t.Fatalf("round %d: a token of disabled alice is live", round)
			}
		}
		h.s.mu.RUnlock()
	}
}
