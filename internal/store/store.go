// Package store is hearth's storage seam: one transactional interface for
// everything hearth persists outside the CA's own database and the audit
// log (users, credentials, passkeys, tokens and refresh families, OIDC
// links, devices and their enrollment tokens, phone enrollment links,
// lockout counters, recovery and reset codes), with two drivers:
//
//   - boltstore, the embedded default: the data dir's hearth.db, whose
//     buckets and records stay byte for byte what they were before the
//     seam existed (an existing data dir keeps working unchanged);
//   - pgstore, PostgreSQL through pgx/v5, for replicas: the same buckets
//     and records as rows of one key-value table, every Update a
//     SERIALIZABLE transaction.
//
// # Shape: buckets of records in transactions
//
// The interface is bbolt's own shape (buckets of byte keys and values,
// read in View and changed in Update), because that is the shape the
// callers' records and their invariants were written for. Every decision
// that must hold across replicas is a read-check-write inside one Update:
// an enrollment token is used once, a refresh token is consumed once and
// its reuse revokes its family (RFC 9700 §4.14.2), a recovery or reset code
// is spent once, a TOTP step is accepted once (RFC 6238 §5.2), a failed
// login is charged before the password is checked. On bbolt one writer at
// a time makes these atomic. On PostgreSQL, SERIALIZABLE isolation makes
// every set of concurrent Updates equivalent to some serial order of them
// (PostgreSQL 15 manual §13.2.3), and a transaction that would break that
// fails with 40001 and is run again — so the same code is correct on one
// replica or many, and the conformance suite (storetest) races it on both.
//
// # Semantics both drivers keep
//
//   - Update's fn may run more than once (a serialization failure or a
//     deadlock, 40001/40P01, retries it on PostgreSQL). fn must have no
//     effect outside the transaction; what must happen exactly once, and
//     only if the change commits — appending audit entries, changing an
//     in-memory index — is registered with [Tx.BeforeCommit], which runs
//     once, after fn's last run succeeded, just before the commit.
//   - If a BeforeCommit hook ran and the commit then fails, Update returns
//     an error wrapping [ErrCommit]: the caller knows its hooks' effects
//     happened although the change did not (auth and ca then record
//     correcting audit entries and undo the index change).
//   - Get of a missing key returns nil; the returned slice is valid only
//     until the transaction ends (copy it to keep it). Put replaces;
//     Delete of a missing key is not an error. ForEach visits keys in
//     byte order. Writing in a View transaction is an error.
//   - A driver error inside fn (the database is unreachable, a query
//     failed) makes Get return nil and every later call fail; Update and
//     View then return an error wrapping [ErrUnavailable], whatever fn
//     returned, and nothing is committed. Callers answer 503.
//   - Buckets are declared once ([Store.Declare]) before use; Tx.Bucket of
//     an undeclared name returns nil.
//   - Secrets are stored only as hashes (tokens SHA-256, codes argon2id or
//     SHA-256 per NIST SP 800-63B-4 §3.1.2.1), except the TOTP seed, which
//     verification needs. That is the callers' rule; the store keeps bytes.
//
// # Invalidation across replicas
//
// Every Put and Delete is also a [Change] (bucket and key) that commits
// with the transaction and reaches every replica's [Feed], so a replica
// that caches records (auth's token index, ca's device cache) drops or
// reloads what another replica changed. A state change and its
// invalidation commit together or not at all, because they are one
// transaction. On PostgreSQL the feed is LISTEN/NOTIFY plus a resync from
// a transaction-id cursor after every (re)connect (notifications sent
// while a listener is down are lost, and a serial high-water mark skips
// rows that commit out of order); [Feed.Fresh] reports whether the
// replica has heard from it within the bound (1 s), and a cache must not
// be trusted when it has not. On bbolt the store has one process, which
// changes its caches itself: the feed delivers nothing and is always
// fresh.
//
// # Trust boundary
//
// The store trusts its callers (ca, auth) to have authorised the change;
// it guarantees atomicity, durability on commit, isolation and the feed,
// and nothing else.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors callers branch on.
var (
	// ErrUnavailable: the database cannot be reached or a statement
	// failed; nothing was committed. The caller answers 503.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrCommit: the BeforeCommit hooks ran but the commit failed, so
	// their effects happened without the change. Always wrapped together
	// with ErrUnavailable. When the connection was lost during the commit
	// the driver cannot know its outcome: it reports ErrCommit too, and
	// the change may in fact have committed (as with ErrUnavailable alone
	// for an Update without hooks), so a correction must not assume it
	// did not.
	ErrCommit = errors.New("store: the commit failed after its hooks ran")
	// ErrConflict: the commit was refused because a concurrent
	// transaction conflicted with this one (PostgreSQL's serialization
	// failure or deadlock at COMMIT, after the hooks ran, so the store did
	// not run fn again). Always wrapped together with ErrCommit and
	// ErrUnavailable. The caller may undo what its hooks did and run the
	// whole operation again.
	ErrConflict = errors.New("store: the commit conflicted with a concurrent transaction")
	// ErrReadOnly: a write in a View transaction.
	ErrReadOnly = errors.New("store: write in a read-only transaction")
	// ErrTooLarge: a Put of a value longer than MaxValueSize (or of a key
	// longer than MaxKeySize). Callers bound what they store far below
	// this; the store refuses absurd sizes rather than carry them.
	ErrTooLarge = errors.New("store: record too large")
)

// Size limits every driver enforces on Put, far above any record hearth
// writes (keys are names and hashes; a user with every credential is a few
// KiB). The key limit fits a PostgreSQL btree entry (at most 2704 bytes,
// keys are not compressible in general), far below bbolt's 32 KiB.
const (
	MaxKeySize   = 1024
	MaxValueSize = 1 << 20
)

// CheckSize returns an ErrTooLarge error if key or value is over its
// limit (for drivers).
func CheckSize(key, value []byte) error {
	switch {
	case len(key) > MaxKeySize:
		return fmt.Errorf("%w: a key of %d bytes (at most %d)", ErrTooLarge, len(key), MaxKeySize)
	case len(value) > MaxValueSize:
		return fmt.Errorf("%w: a value of %d bytes (at most %d)", ErrTooLarge, len(value), MaxValueSize)
	}
	return nil
}

// Store is hearth's persistent state.
type Store interface {
	// Declare creates the named buckets if they do not exist.
	Declare(ctx context.Context, buckets ...string) error
	// View runs fn in a read-only transaction over a consistent snapshot.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a read-write transaction and commits it if fn
	// returns nil. fn may run more than once (see the package doc).
	Update(ctx context.Context, fn func(Tx) error) error
	// Feed is the stream of changes committed by any replica.
	Feed() Feed
	// Driver names the implementation: "bbolt" or "postgres".
	Driver() string
	// Ping checks that the store can serve (for /.hearth/readyz).
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}

// Tx is a transaction.
type Tx interface {
	// Bucket returns the named bucket, or nil if it was never declared.
	Bucket(name string) Bucket
	// Writable reports whether this is an Update transaction.
	Writable() bool
	// BeforeCommit registers fn to run once, after the Update's fn has
	// returned nil for the last time and before the commit; an error from
	// fn rolls the transaction back and is returned by Update. Hooks run
	// in the order registered. In a View, fn runs once fn of the View has
	// returned nil.
	BeforeCommit(fn func() error)
}

// Bucket is a set of records (keys and values of bytes) in a transaction.
// *bbolt.Bucket implements it.
type Bucket interface {
	// Get returns the value of key, or nil if there is none.
	Get(key []byte) []byte
	// Put stores value under key (both are copied). An empty key is an
	// error; a key over MaxKeySize or a value over MaxValueSize is
	// ErrTooLarge.
	Put(key, value []byte) error
	// Delete removes key.
	Delete(key []byte) error
	// ForEach calls fn for each record in key order; an error from fn
	// stops it and is returned. fn must not change the bucket.
	ForEach(fn func(k, v []byte) error) error
}

// Change names one record that a committed transaction put or deleted.
type Change struct {
	Bucket string
	Key    []byte
	// Resync, when set, names no record: the replica may have missed
	// changes (its cursor is older than the changes the database keeps),
	// so it must drop or reload every cached record.
	Resync bool
}

// Feed delivers the changes of every replica, never skipping a committed
// one: at least once, possibly twice (reloading a record is idempotent).
type Feed interface {
	// Subscribe calls fn for each batch of changes until ctx ends; fn must
	// not block for long (it runs on the feed's goroutine). The first
	// batch a subscriber gets after a reconnect is everything committed
	// since its cursor, or one Resync change.
	Subscribe(ctx context.Context, fn func([]Change)) error
	// Fresh reports whether every change committed before now minus the
	// bound has been delivered; callers must not trust their caches when
	// it is false (they read the store, or refuse).
	Fresh(now time.Time) bool
}

// StillFresh is the Feed of a store with one process (bbolt): no other
// writer exists, so there is nothing to deliver and the caches are always
// fresh.
type StillFresh struct{}

// Subscribe implements Feed: it delivers nothing and returns when ctx ends.
func (StillFresh) Subscribe(ctx context.Context, _ func([]Change)) error {
	<-ctx.Done()
	return nil
}

// Fresh implements Feed.
func (StillFresh) Fresh(time.Time) bool { return true }
