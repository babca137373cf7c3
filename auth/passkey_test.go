package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"

	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// The passkey rules that need no authenticator: the relying party must be
// a host name, only the user's own fresh session may register, an admin's
// API removes but cannot add, and failed or throttled sign-ins are
// answered and audited like passwords. Real credentials are exercised by
// internal/webui's TestChromiumPasskeys.
func TestPasskeyRules(t *testing.T) {
	h := newHarness(t, Config{ClientBurst: 3})
	h.addUser("alice")
	ctx := context.Background()
	if _, err := h.s.BeginPasskeyLogin(ctx, ""); !errors.Is(err, ErrPasskeysOff) {
		t.Fatalf("BeginPasskeyLogin before EnablePasskeys = %v, want ErrPasskeysOff", err)
	}
	for _, bad := range []string{"http://hearth.home.arpa", "https://192.168.1.5:8443", "https://[::1]:8443", "hearth"} {
		if err := h.s.EnablePasskeys(bad, ""); err == nil {
			t.Errorf("EnablePasskeys(%q) accepted an origin WebAuthn cannot use", bad)
		}
	}
	if err := h.s.EnablePasskeys("https://hearth.home.arpa:8443", "Home"); err != nil {
		t.Fatal(err)
	}

	alice := authz.WithPrincipal(ctx, &authz.Principal{ID: "user:alice"})
	admin := authz.WithPrincipal(ctx, localPrincipal)
	now := h.clk.Now()
	if _, err := h.s.BeginPasskeyRegistration(admin, "alice", now); !errors.Is(err, ErrNotSelf) {
		t.Errorf("an admin registering for alice = %v, want ErrNotSelf", err)
	}
	if _, err := h.s.FinishPasskeyRegistration(admin, "alice", "x", "", []byte("{}"), ""); !errors.Is(err, ErrNotSelf) {
		t.Errorf("an admin finishing a registration for alice = %v, want ErrNotSelf", err)
	}
	if _, err := h.s.BeginPasskeyRegistration(alice, "alice", now.Add(-PasskeyFreshLogin-time.Second)); !errors.Is(err, ErrStaleLogin) {
		t.Errorf("registering from a 5m1s-old sign-in = %v, want ErrStaleLogin", err)
	}
	o, err := h.s.BeginPasskeyRegistration(alice, "alice", now)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"residentKey":"required"`, `"userVerification":"required"`, `"id":"hearth.home.arpa"`} {
		if !strings.Contains(string(o.PublicKey), want) {
			t.Errorf("registration options lack %s: %s", want, o.PublicKey)
		}
	}
	if strings.Contains(string(o.PublicKey), "alice") && !strings.Contains(string(o.PublicKey), `"name":"alice"`) {
		t.Errorf("the user handle carries the name: %s", o.PublicKey)
	}
	// A ceremony is single use, and bound to its user.
	if _, err := h.s.FinishPasskeyRegistration(alice, "alice", o.Ceremony, "x", []byte(`{"id":"AA"}`), ""); !errors.Is(err, ErrPasskeyRefused) {
		t.Errorf("a malformed attestation = %v, want ErrPasskeyRefused", err)
	}
	if _, err := h.s.FinishPasskeyRegistration(alice, "alice", o.Ceremony, "x", []byte(`{}`), ""); !errors.Is(err, ErrPasskeyRefused) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("a ceremony used twice = %v, want refused as expired", err)
	}

	// The admin API lists and removes; there is no route that adds.
	if r := h.do("GET", "/.hearth/v1/admin/users/alice/passkeys", nil, ""); r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("GET passkeys = %d %s", r.status, r.body)
	}
	if r := h.post("/.hearth/v1/admin/users/alice/passkeys/remove", map[string]string{"id": "AAAA"}); r.status != http.StatusNotFound {
		t.Errorf("removing an unknown passkey = %d %s, want 404", r.status, r.body)
	}
	for _, p := range []string{"passkeys", "passkeys/add", "passkeys/register"} {
		if r := h.post("/.hearth/v1/admin/users/alice/"+p, map[string]string{}); r.status != http.StatusNotFound && r.status != http.StatusMethodNotAllowed {
			t.Errorf("POST .../alice/%s = %d, want no such route", p, r.status)
		}
	}

	// Failed sign-ins: 401 and an audit entry, each from the address's
	// bucket (3 here), then 429.
	o, err = h.s.BeginPasskeyLogin(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	n0 := len(h.rec.all())
	for i, body := range []string{`{}`, `not json`, strings.Repeat("x", MaxPasskeyBody+1)} {
		if _, err := h.s.FinishPasskeyLogin(ctx, o.Ceremony, []byte(body), "198.51.100.7:4000"); !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("bad answer %d = %v, want ErrInvalidCredentials", i, err)
		}
	}
	var te *ThrottledError
	if _, err := h.s.FinishPasskeyLogin(ctx, o.Ceremony, []byte(`{}`), "198.51.100.7:4001"); !errors.As(err, &te) {
		t.Errorf("the 4th attempt from one address = %v, want throttled", err)
	}
	fails := 0
	for _, e := range h.rec.all()[n0:] {
		if e.Name == audit.EventAuthLogin && e.Outcome == audit.OutcomeFailure {
			fails++
		}
	}
	if fails != 4 {
		t.Errorf("audit: %d failed passkey sign-ins recorded, want 4 (3 refused, 1 throttled)", fails)
	}

	// Passkey as a second factor: the options ask for no password, and
	// a wrong password and a right one with a bad answer get the same
	// ErrInvalidCredentials.
	for i, pw := range []string{"wrong password of length", alicePw} {
		o, err := h.s.BeginPasskeySecondFactor(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(o.PublicKey), "allowCredentials") {
			t.Errorf("second-factor options name credentials: %s", o.PublicKey)
		}
		_, err = h.s.FinishPasskeySecondFactor(ctx, o.Ceremony, LoginRequest{Username: "alice", Password: pw, Client: "203.0.113.9:1"}, []byte(`{}`))
		if !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("second factor %d = %v, want ErrInvalidCredentials", i, err)
		}
	}
}

// The options of a passkey sign-in carry nothing of the name typed.
func TestPasskeyLoginOptionsIgnoreName(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	if err := h.s.EnablePasskeys("https://hearth.home.arpa", ""); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := h.s.BeginPasskeyLogin(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.s.BeginPasskeyLogin(ctx, "nobody")
	if err != nil {
		t.Fatal(err)
	}
	strip := func(s string) string { // the challenge differs, as it must
		i := strings.Index(s, `"challenge":"`)
		j := strings.Index(s[i+13:], `"`)
		return s[:i] + s[i+13+j:]
	}
	if len(a.PublicKey) != len(b.PublicKey) || strip(string(a.PublicKey)) != strip(string(b.PublicKey)) || len(a.Ceremony) != len(b.Ceremony) {
		t.Errorf("options differ by name:\n%s\n%s", a.PublicKey, b.PublicKey)
	}
	if strings.Contains(string(a.PublicKey), "allowCredentials") {
		t.Errorf("options name credentials: %s", a.PublicKey)
	}
}

// A passkey's failures lock its owner's passkeys (not the password), and
// the lockout survives a restart, as a password's does; an unlock ends it.
// The assertion is a real one (the fuzz seed) that fails verification
// here: its challenge is not this ceremony's.
func TestPasskeyLockoutPersists(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	ctx := context.Background()
	if err := h.s.EnablePasskeys("https://localhost", ""); err != nil {
		t.Fatal(err)
	}
	body := readSeed(t, "testdata/fuzz/FuzzParseAssertion/chromium-virtual-authenticator-0")
	p, err := parseAssertion(body)
	if err != nil {
		t.Fatal(err)
	}
	handle := p.Response.UserHandle
	if err := h.s.update(ctx, func(tx store.Tx) error {
		if err := putJSON(tx, bucketPasskeys, p.RawID, &passkeyRecord{User: "alice", Label: "seed", Credential: webauthn.Credential{ID: p.RawID, PublicKey: []byte{0xa0}}}); err != nil {
			return err
		}
		hb := tx.Bucket(bucketPasskeyHandles)
		if err := hb.Put(append([]byte("h"), handle...), []byte("alice")); err != nil {
			return err
		}
		return hb.Put([]byte("ualice"), handle)
	}); err != nil {
		t.Fatal(err)
	}
	try := func(s *Service, i int) error {
		t.Helper()
		o, err := s.BeginPasskeyLogin(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.FinishPasskeyLogin(ctx, o.Ceremony, body, fmt.Sprintf("198.51.100.%d:1", i))
		return err
	}
	for i := range lockoutThreshold {
		if err := try(h.s, i); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("attempt %d = %v, want ErrInvalidCredentials", i, err)
		}
	}
	var te *ThrottledError
	if err := try(h.s, 50); !errors.As(err, &te) {
		t.Fatalf("after %d failures = %v, want throttled", lockoutThreshold, err)
	}
	h.mustLogin("alice", alicePw) // the password is not locked by the passkey's failures

	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(boltstore.New(h.db), Config{Argon2: tinyArgon2}, Options{Audit: h.rec, Now: h.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	if err := s2.EnablePasskeys("https://localhost", ""); err != nil {
		t.Fatal(err)
	}
	if err := try(s2, 51); !errors.As(err, &te) {
		t.Fatalf("after a restart = %v, want still throttled", err)
	}
	if err := s2.Unlock(authz.WithPrincipal(ctx, localPrincipal), "alice"); err != nil {
		t.Fatal(err)
	}
	if err := try(s2, 52); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("after an unlock = %v, want ErrInvalidCredentials (no longer locked)", err)
	}
}
