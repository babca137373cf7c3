package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// TestOpensDataDirOfOlderHearth: a hearth.db written before the store seam
// (raw bbolt buckets with the records as hearth wrote them then, a user
// with a lockout count in her record, a live token pair) keeps working: the
// user logs in, the token authenticates and refreshes, and the failures
// counted then still count toward the lockout.
func TestOpensDataDirOfOlderHearth(t *testing.T) {
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clk := &fakeClock{t: now}

	// The records as the code before the seam wrote them: JSON of
	// userRecord (throttle state inside), tokenRecord and refreshRecord
	// under the SHA-256 of the token.
	hs := newHasher(tinyArgon2, 1, 1, rand.Reader)
	phc, err := hs.hash(alicePw)
	if err != nil {
		t.Fatal(err)
	}
	at := AccessTokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	rt := RefreshTokenPrefix + "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
	ah, rh := tokenHash(at), tokenHash(rt)
	user := fmt.Sprintf(`{"name":"alice","caps":["system:read"],"hash":%q,"created":"2026-11-01T00:00:00Z","password_changed":"2026-11-01T00:00:00Z","throttle":{"failures":3}}`, phc)
	tok := `{"user":"alice","family":"0a1b2c3d4e5f60718293a4b5","caps":["status"],"auth_time":"2026-11-25T11:30:00Z","expires":"2026-11-25T12:30:00Z","last_used":"2026-11-25T11:59:00Z","method":"password"}`
	ref := `{"user":"alice","family":"0a1b2c3d4e5f60718293a4b5","caps":["status"],"auth_time":"2026-11-25T11:30:00Z","expires":"2026-12-25T11:30:00Z","method":"password"}`
	if err := db.Update(func(tx *bbolt.Tx) error {
		for name, kv := range map[string][2]string{
			"auth.users":   {"alice", user},
			"auth.tokens":  {string(ah[:]), tok},
			"auth.refresh": {string(rh[:]), ref},
		} {
			b, err := tx.CreateBucketIfNotExists([]byte(name))
			if err != nil {
				return err
			}
			if !json.Valid([]byte(kv[1])) {
				return fmt.Errorf("bad fixture %s", name)
			}
			if err := b.Put([]byte(kv[0]), []byte(kv[1])); err != nil {
				return err
			}
		}
		for _, name := range []string{"auth.identities", "auth.passkeys", "auth.passkey_handles"} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	s, err := Open(boltstore.New(db), Config{Argon2: tinyArgon2, ClientBurst: 1000}, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	p, err := s.AuthenticateToken(ctx, at)
	if err != nil || p.ID != "user:alice" || capsString(p.Caps) != "status" {
		t.Fatalf("the stored token: %+v %v, want user:alice with status", p, err)
	}
	if _, err := s.Refresh(ctx, rt, "127.0.0.1:1"); err != nil {
		t.Fatalf("the stored refresh token: %v", err)
	}
	// Three failures were counted before; two more start the lockout.
	for i := range 2 {
		if _, err := s.Login(ctx, LoginRequest{Username: "alice", Password: "not her password at all", Client: "127.0.0.1:1"}); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("wrong password %d: %v", i, err)
		}
	}
	var te *ThrottledError
	if _, err := s.Login(ctx, LoginRequest{Username: "alice", Password: alicePw, Client: "127.0.0.1:1"}); !errors.As(err, &te) || te.RetryAfter != lockoutBase {
		t.Fatalf("after 3 old and 2 new failures: %v, want locked for %s", err, lockoutBase)
	}
	clk.Advance(lockoutBase)
	sess, err := s.Login(ctx, LoginRequest{Username: "alice", Password: alicePw, Client: "127.0.0.1:1"})
	if err != nil {
		t.Fatalf("login with the stored password: %v", err)
	}
	if _, err := s.AuthenticateToken(ctx, sess.Token); err != nil {
		t.Fatal(err)
	}
	// The old record's throttle state moved to auth.lockout, once.
	if err := db.View(func(tx *bbolt.Tx) error {
		var u userRecord
		if err := json.Unmarshal(tx.Bucket([]byte("auth.users")).Get([]byte("alice")), &u); err != nil {
			return err
		}
		if u.Throttle != (throttleRecord{}) {
			return fmt.Errorf("user record still holds throttle state %+v", u.Throttle)
		}
		if v := tx.Bucket([]byte(bucketLockout)).Get(lockoutKey(kindLogin, "alice")); v != nil {
			return fmt.Errorf("lockout record %s left after a successful login (%s)", v, hex.EncodeToString(lockoutKey(kindLogin, "alice")))
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}
