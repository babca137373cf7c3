package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store"
)

// Buckets in the store (store.Store); all prefixed "auth.". The names are
// those of the bbolt buckets before the store seam existed, so that an
// existing hearth.db reads unchanged.
const (
	bucketUsers      = "auth.users"      // name → userRecord
	bucketTokens     = "auth.tokens"     // SHA-256(access token) → tokenRecord
	bucketRefresh    = "auth.refresh"    // SHA-256(refresh token) → refreshRecord
	bucketIdentities = "auth.identities" // issuer \x00 subject → user name
	// bucketLockout holds the failure count of every name that failed
	// (kind \x00 name → lockoutRecord), user or not, charged in the store
	// before the password is checked (throttle.go).
	bucketLockout = "auth.lockout"
)

// allBuckets are the buckets Open declares.
var allBuckets = []string{bucketUsers, bucketTokens, bucketRefresh, bucketIdentities, bucketLockout, bucketPasskeys, bucketPasskeyHandles}

// userRecord is a user as stored. It holds no secret in the clear except
// the TOTP seed, which verification needs (the database file is 0600).
type userRecord struct {
	Name            string         `json:"name"`
	Caps            []string       `json:"caps"`
	Hash            string         `json:"hash,omitempty"` // argon2id PHC; empty until a password is set
	Disabled        bool           `json:"disabled,omitempty"`
	Created         time.Time      `json:"created"`
	PasswordChanged time.Time      `json:"password_changed,omitzero"`
	TOTPSecret      string         `json:"totp_secret,omitempty"`
	TOTPPending     string         `json:"totp_pending,omitempty"`
	TOTPLastStep    uint64         `json:"totp_last_step,omitempty"`
	Recovery        []recoverySlot `json:"recovery,omitempty"`
	Reset           *resetRecord   `json:"reset,omitempty"`
	// Throttle and PasskeyThrottle are where hearth kept the user's
	// lockout state before the store seam; Open moves them to auth.lockout
	// once (migrateThrottle) and nothing writes them since.
	Throttle        throttleRecord `json:"throttle,omitzero"`
	PasskeyThrottle throttleRecord `json:"passkey_throttle,omitzero"`
}

// recoverySlot is one unused recovery code: its public locator (the first
// group of the code) and the argon2id hash of the whole code.
type recoverySlot struct {
	Locator string `json:"locator"`
	Hash    string `json:"hash"`
}

// resetRecord is an admin-issued one-time reset code, stored as SHA-256
// (it carries 160 bits from crypto/rand, so a fast hash suffices: NIST SP
// 800-63B-4 §3.1.2.1 asks a slow hash only below 112 bits).
type resetRecord struct {
	Hash    []byte    `json:"hash"`
	Expires time.Time `json:"expires"`
}

// throttleRecord is the lockout state an older hearth kept in the user
// record (see lockoutRecord for today's).
type throttleRecord struct {
	Failures    int       `json:"failures,omitempty"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	Disabled    bool      `json:"disabled,omitempty"`
}

// tokenRecord is an access token as stored, keyed by its SHA-256.
type tokenRecord struct {
	User     string             `json:"user"`
	Family   string             `json:"family"`
	Caps     []authz.Capability `json:"caps"`
	AuthTime time.Time          `json:"auth_time"`
	Expires  time.Time          `json:"expires"`
	LastUsed time.Time          `json:"last_used"`
	MFA      bool               `json:"mfa,omitempty"`
	Method   string             `json:"method"`
	// PR: the authentication used a passkey (phishing resistant).
	PR bool `json:"phishing_resistant,omitempty"`
}

// refreshRecord is a refresh token as stored, keyed by its SHA-256. A
// used one is kept until it expires, so that its reuse is recognised.
type refreshRecord struct {
	User     string             `json:"user"`
	Family   string             `json:"family"`
	Caps     []authz.Capability `json:"caps"`
	AuthTime time.Time          `json:"auth_time"`
	Expires  time.Time          `json:"expires"`
	Used     bool               `json:"used,omitempty"`
	MFA      bool               `json:"mfa,omitempty"`
	Method   string             `json:"method"`
	PR       bool               `json:"phishing_resistant,omitempty"`
}

func getUser(tx store.Tx, name string) (*userRecord, error) {
	v := tx.Bucket(bucketUsers).Get([]byte(name))
	if v == nil {
		return nil, nil
	}
	var u userRecord
	if err := json.Unmarshal(v, &u); err != nil {
		return nil, fmt.Errorf("auth: user %q: corrupt record: %w", name, err)
	}
	return &u, nil
}

func putUser(tx store.Tx, u *userRecord) error {
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketUsers).Put([]byte(u.Name), b)
}

func putJSON(tx store.Tx, bucket string, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put(key, b)
}

// view runs fn in a read transaction of the store; a store that cannot be
// read is ErrUnavailable (HTTP 503).
func (s *Service) view(ctx context.Context, fn func(tx store.Tx) error) error {
	return storeErr(s.st.View(ctx, fn))
}

// update runs fn in a write transaction of the store. fn may run more
// than once (store.Store.Update): it must have no effect outside tx.
func (s *Service) update(ctx context.Context, fn func(tx store.Tx) error) error {
	return storeErr(s.st.Update(ctx, fn))
}

// storeErr makes the store's unavailability auth's (HTTP 503).
func storeErr(err error) error {
	if err != nil && errors.Is(err, store.ErrUnavailable) && !errors.Is(err, ErrUnavailable) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
