package auth

import (
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/authz"
)

// Buckets in the shared bbolt database; all prefixed "auth.".
var (
	bucketUsers      = []byte("auth.users")      // name → userRecord
	bucketTokens     = []byte("auth.tokens")     // SHA-256(access token) → tokenRecord
	bucketRefresh    = []byte("auth.refresh")    // SHA-256(refresh token) → refreshRecord
	bucketIdentities = []byte("auth.identities") // issuer \x00 subject → user name
)

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
	Throttle        throttleRecord `json:"throttle,omitzero"`
	// PasskeyThrottle is the lockout state of the user's passkeys, kept
	// apart so that password guessing does not lock them out (passkey.go).
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

// throttleRecord is the persisted part of an account's throttling state,
// so that a restart does not forget a lockout.
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

func createBuckets(db *bbolt.DB) error {
	return db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketUsers, bucketTokens, bucketRefresh, bucketIdentities} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("auth: creating bucket %s: %w", b, err)
			}
		}
		return createPasskeyBuckets(tx)
	})
}

func getUser(tx *bbolt.Tx, name string) (*userRecord, error) {
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

func putUser(tx *bbolt.Tx, u *userRecord) error {
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketUsers).Put([]byte(u.Name), b)
}

func putJSON(tx *bbolt.Tx, bucket, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put(key, b)
}
