// Package store is hearth's storage seam: one interface for everything
// hearth persists outside the CA's own database and the audit log, with two
// implementations to come — the embedded bbolt default (the data dir's
// hearth.db, unchanged on disk) and PostgreSQL (pgx/v5) for replicas.
//
// STATUS: design only. Nothing implements or uses this interface yet; ca/
// and auth/ still write bbolt directly. It is written down as Go so that
// the next change (the bbolt implementation that ca/ and auth/ move onto,
// then the PostgreSQL one, then one conformance suite run against both)
// has a reviewed shape to fill in. See /work/notes/issue-12.md.
//
// # Shape
//
// Everything happens in a transaction: [Store.View] for reads and
// [Store.Update] for a change. A change and what it invalidates commit
// together: an Update that revokes, disables, locks or changes anything a
// replica may cache calls [Tx.Invalidate] in the same transaction, so no
// replica can see the change without its invalidation or the reverse.
//
// Single-use secrets are consumed by one method that checks and consumes
// at once (Consume…): on PostgreSQL one statement (UPDATE … WHERE used_at
// IS NULL … RETURNING, or DELETE … RETURNING), on bbolt the single writer.
// Of concurrent consumers, on one replica or many, exactly one gets the
// record; the others get ErrUsed or ErrNotFound.
//
// Lockout counters are charged before the password is checked
// ([Tx.ChargeAttempt]), atomically, so that parallel guesses across
// replicas get no more tries than sequential ones and no update is lost.
//
// # Semantics both drivers keep
//
//   - Update's fn may run more than once: PostgreSQL runs it at
//     SERIALIZABLE and retries on serialization failure (40001) and
//     deadlock (40P01). fn must therefore have no effect outside the Tx —
//     in particular it must not append audit entries itself; it returns
//     them ([Tx.Audit]) and they commit with the change.
//   - A Get of a missing record returns ErrNotFound; Put replaces; Delete
//     of a missing record is not an error.
//   - Secrets are stored only as hashes (tokens SHA-256, codes argon2id or
//     SHA-256 per NIST SP 800-63B-4 §3.1.2.1), never in the clear, except
//     the TOTP seed, which verification needs.
//   - Names are canonical (lower case) before they reach the store.
//
// # Trust boundary
//
// The store trusts its callers (ca, auth) to have authorised the change;
// it guarantees atomicity, single use and the invalidation feed, and
// nothing else.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/smallstep/nosql/database"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
)

// Errors callers branch on.
var (
	// ErrNotFound: no such record.
	ErrNotFound = errors.New("store: not found")
	// ErrUsed: the single-use secret was consumed already (a refresh
	// token's reuse revokes its family: RFC 9700 §4.14.2).
	ErrUsed = errors.New("store: already used")
	// ErrConflict: a record that must be new exists (a user or device of
	// that name).
	ErrConflict = errors.New("store: already exists")
	// ErrUnavailable: the database cannot be reached or the transaction
	// could not commit; the caller answers 503 and changes nothing.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrStale: the replica's view of invalidations is older than the
	// configured bound (see [Feed]); the caller falls back to the database
	// or refuses, never trusts its cache.
	ErrStale = errors.New("store: invalidation feed is stale")
)

// Store is hearth's persistent state.
type Store interface {
	// View runs fn in a read-only transaction with a consistent snapshot.
	View(ctx context.Context, fn func(ReadTx) error) error
	// Update runs fn in a read-write transaction and commits it, with its
	// invalidations and audit events, if fn returns nil. fn may be run
	// again (see the package documentation).
	Update(ctx context.Context, fn func(Tx) error) error
	// Feed is the stream of invalidations committed by any replica.
	Feed() Feed
	// Ping checks the store can serve (for /.hearth/readyz).
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}

// ReadTx reads within a transaction.
type ReadTx interface {
	// Users.
	User(name string) (*User, error)
	Users() ([]User, error)
	// UserByIdentity resolves an OIDC link (issuer, subject) to a user name.
	UserByIdentity(issuer, subject string) (string, error)

	// Tokens (by SHA-256 of the token text).
	AccessToken(hash TokenHash) (*AccessToken, error)
	// AccessTokens lists the live access tokens (for warming a replica's
	// index at start and after a resync).
	AccessTokens() ([]AccessToken, error)
	RefreshToken(hash TokenHash) (*RefreshToken, error)

	// Devices and their certificate index.
	Device(name string) (*Device, error)
	Devices() ([]Device, error)
	DeviceCerts(incarnation string) ([]DeviceCert, error)
	// DeviceByCert finds the device a certificate (SHA-256 of its DER) was
	// issued to.
	DeviceByCert(sha256 [32]byte) (device string, cert *DeviceCert, err error)

	// RecoveryCode returns the user's unused recovery code under locator
	// (its hash, to verify before ConsumeRecoveryCode).
	RecoveryCode(user, locator string) (*RecoveryCode, error)

	// Lockout state of a name (a user's or not), per kind.
	Lockout(kind LockoutKind, name string) (Lockout, error)
}

// Tx changes state within a transaction.
type Tx interface {
	ReadTx

	// CreateUser adds a user; ErrConflict if the name is taken.
	CreateUser(u *User) error
	// PutUser replaces a user's record (capabilities, password hash, TOTP,
	// disabled flag). A change that ends sessions (password, disable)
	// also calls RevokeTokens and Invalidate.
	PutUser(u *User) error
	DeleteUser(name string) error
	// LinkIdentity and UnlinkIdentity manage OIDC links; an (issuer,
	// subject) belongs to at most one user (ErrConflict).
	LinkIdentity(issuer, subject, user string) error
	UnlinkIdentity(issuer, subject string) error

	// AdvanceTOTPStep records that the user's TOTP code for time step was
	// accepted, if step is later than the last accepted one; ErrUsed
	// otherwise, so that one code is accepted once across replicas (RFC
	// 6238 §5.2).
	AdvanceTOTPStep(user string, step uint64) error

	// SetRecoveryCodes replaces a user's recovery codes (argon2id hashes
	// under public locators).
	SetRecoveryCodes(user string, codes []RecoveryCode) error
	// ConsumeRecoveryCode deletes the code under locator and returns it;
	// of concurrent consumers exactly one succeeds (ErrNotFound for the
	// others). The caller verifies the code's hash before (outside the
	// transaction: argon2id is slow) and consumes after.
	ConsumeRecoveryCode(user, locator string) (*RecoveryCode, error)
	// SetResetCode stores a user's admin-issued reset code (replacing
	// one); ConsumeResetCode takes it if hash matches and it has not
	// expired at now, once.
	SetResetCode(user string, c *ResetCode) error
	ConsumeResetCode(user string, hash [32]byte, now time.Time) error

	// PutAccessToken and PutRefreshToken store a new token.
	PutAccessToken(t *AccessToken) error
	PutRefreshToken(t *RefreshToken) error
	// ConsumeRefreshToken marks the refresh token used and returns it, if
	// it exists, is unused and unexpired at now; ErrUsed if it was used
	// (the caller then revokes the family), ErrNotFound otherwise.
	ConsumeRefreshToken(hash TokenHash, now time.Time) (*RefreshToken, error)
	// TouchAccessToken records use (for the idle timeout); it may be
	// batched and is not an invalidation.
	TouchAccessToken(hash TokenHash, at time.Time) error
	// RevokeTokens deletes the selected access and refresh tokens and
	// returns the access tokens' hashes (for the caller's index and the
	// invalidation it records).
	RevokeTokens(sel TokenSelector) ([]TokenHash, error)

	// CreateDevice adds or re-creates a device (a new incarnation, with
	// its enrollment token's jti); ErrConflict if an enrolled, unrevoked
	// device has the name.
	CreateDevice(d *Device) error
	// PutDevice replaces a device's record (capabilities, revocation).
	PutDevice(d *Device) error
	// ConsumeEnrollment marks the device's enrollment token jti used, if it
	// is the device's current one, unexpired at now and unused; of
	// concurrent enrollments exactly one succeeds (ErrUsed for the others).
	// step's own one-time-token check (UseToken in the CA database, made
	// atomic across replicas by internal/pgnosql) stays as a second lock:
	// `step ca certificate` enrollments reach only that one.
	ConsumeEnrollment(device, jti string, now time.Time) error
	// AddDeviceCert indexes a certificate issued to the device's current
	// incarnation together with smallstep's own rows for it (step: the
	// x509_certs and x509_certs_data writes), so that a certificate is
	// stored if and only if it is indexed. On bbolt both live in the CA
	// database and commit when AddDeviceCert returns (as ca/certdb.go does
	// today); on PostgreSQL they are rows of this transaction.
	AddDeviceCert(device string, c *DeviceCert, step *database.Tx) error
	// RevokeDeviceCert marks one of the device's certificates revoked.
	RevokeDeviceCert(device, serial string) error

	// ChargeAttempt counts one attempt against name before its secret is
	// checked and returns the state after the charge; the caller refuses
	// when it is locked. Success (ClearAttempts) resets the count.
	ChargeAttempt(kind LockoutKind, name string, now time.Time) (Lockout, error)
	ClearAttempts(kind LockoutKind, name string) error
	// SetLockout stores the policy's decision for the charged state
	// (lockout until, disabled) — auth computes the policy, the store
	// keeps it.
	SetLockout(kind LockoutKind, name string, l Lockout) error

	// Invalidate records that what c names has changed, committed with the
	// transaction and delivered to every replica's Feed.
	Invalidate(c Change) error
	// Audit queues events to be appended to the audit log with the
	// transaction: on PostgreSQL they are rows of the same transaction,
	// sequenced and signed afterwards (so a change is never without its
	// entry, nor an entry without its change); on bbolt they are appended
	// to the file log before the commit, as today. Update returns once
	// they are durable; the caller then waits for a signed checkpoint
	// covering them before it answers.
	Audit(events ...audit.Event) error
}

// TokenHash is the SHA-256 of a token's text.
type TokenHash [32]byte

// User is a user account.
type User struct {
	Name            string
	Granted         []string // capability names as granted (bundles unexpanded)
	PasswordHash    string   // argon2id PHC string; "" until set
	PasswordChanged time.Time
	Disabled        bool
	Created         time.Time
	TOTPSecret      string // the seed (verification needs it)
	TOTPPending     string // a seed being enrolled
	TOTPLastStep    uint64 // last accepted time step (RFC 6238 §5.2 replay)
	// Version increases with every PutUser; a cached copy older than the
	// stored one is stale.
	Version int64
}

// RecoveryCode is one unused recovery code.
type RecoveryCode struct {
	Locator string // public first group of the code
	Hash    string // argon2id PHC of the whole code
}

// ResetCode is an admin-issued one-time password reset code.
type ResetCode struct {
	Hash    [32]byte // SHA-256 (160 random bits)
	Expires time.Time
}

// AccessToken is a bearer access token as stored.
type AccessToken struct {
	Hash     TokenHash
	User     string
	Family   string
	Caps     []authz.Capability
	AuthTime time.Time
	Expires  time.Time
	LastUsed time.Time
	MFA      bool
	Method   string
}

// RefreshToken is a refresh token as stored; a used one is kept until it
// expires, so that its reuse is recognised.
type RefreshToken struct {
	Hash     TokenHash
	User     string
	Family   string
	Caps     []authz.Capability
	AuthTime time.Time
	Expires  time.Time
	UsedAt   time.Time // zero while unused
	MFA      bool
	Method   string
}

// TokenSelector picks the tokens RevokeTokens ends: a family, or all of a
// user's except one family (a password change keeps the session that made
// it).
type TokenSelector struct {
	User         string
	Family       string
	ExceptFamily string
}

// Device is an enrolled (or enrollable) device.
type Device struct {
	Name        string
	Granted     []string
	Caps        []authz.Capability
	Lifetime    time.Duration
	CreatedAt   time.Time
	Incarnation string // random per CreateDevice; keys the certificate index
	// The current enrollment token: its jti, expiry and use.
	TokenID      string
	TokenExpires time.Time
	TokenUsedAt  time.Time
	Revoked      bool
	RevokedAt    time.Time
	Version      int64
}

// DeviceCert is one certificate issued to a device incarnation.
type DeviceCert struct {
	Serial   string // decimal, as smallstep writes it
	SHA256   [32]byte
	NotAfter time.Time
	Revoked  bool
	IssuedAt time.Time
}

// LockoutKind separates the counters (login and password change; recovery
// and reset codes), so that an attacker who keeps the password locked
// does not also block recovery.
type LockoutKind string

// Lockout kinds.
const (
	LockoutLogin   LockoutKind = "login"
	LockoutRecover LockoutKind = "recover"
)

// Lockout is a name's throttling state, whether or not a user of that name
// exists (unknown names are tracked alike, so that they answer alike;
// their rows expire).
type Lockout struct {
	Failures    int
	LockedUntil time.Time
	Disabled    bool // password login disabled (NIST SP 800-63B-4 §3.2.2)
	LastFailure time.Time
}

// ChangeKind names what an invalidation is about.
type ChangeKind string

// Change kinds: each names a cache a replica keeps.
const (
	ChangeUser    ChangeKind = "user"    // Key: user name (caps, disabled, password, TOTP)
	ChangeTokens  ChangeKind = "tokens"  // Key: user name; Hashes: the revoked access tokens
	ChangeDevice  ChangeKind = "device"  // Key: device name (caps, revocation, certificates)
	ChangeLockout ChangeKind = "lockout" // Key: kind \x00 name
	ChangePolicy  ChangeKind = "policy"  // provisioners, bundles, routes
	ChangeResync  ChangeKind = "resync"  // drop every cache (a restore, or a cursor older than the changes kept)
)

// Change is one invalidation.
type Change struct {
	Kind   ChangeKind
	Key    string
	Hashes []TokenHash
}

// Feed delivers the invalidations of every replica, in an order in which
// no committed change is ever skipped: at least once, possibly twice
// (invalidation is idempotent).
//
// On PostgreSQL: a changes table written in the change's transaction, a
// NOTIFY on commit, a LISTEN on a dedicated connection, and after every
// (re)connect a resync from a cursor over transaction ids
// (pg_snapshot_xmin), because notifications sent while the listener was
// down are lost and a bigserial high-water mark can skip rows that commit
// out of order. On bbolt the feed is in-process.
type Feed interface {
	// Subscribe calls fn for each change until ctx ends; fn must not block.
	// After a reconnect it first delivers every change committed since its
	// cursor, or one ChangeResync if the changes table no longer reaches
	// back that far.
	Subscribe(ctx context.Context, fn func(Change)) error
	// Fresh reports whether the replica has heard from the feed within the
	// bound (1 s by default): when it has not, callers must not trust
	// their caches and get ErrStale from cached lookups.
	Fresh(now time.Time) bool
}
