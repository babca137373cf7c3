// Package boltstore is the embedded driver of internal/store: the data
// dir's hearth.db (bbolt), one process, one writer at a time. Buckets are
// bbolt buckets of the same names and records are stored as the callers
// give them, so a data dir written before the store seam existed reads
// unchanged.
package boltstore

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/internal/store"
)

// Store is store.Store on an open bbolt database.
type Store struct {
	db    *bbolt.DB
	owned bool
}

var _ store.Store = (*Store)(nil)

// New wraps an open database; Close then leaves it open (its opener closes
// it).
func New(db *bbolt.DB) *Store { return &Store{db: db} }

// Open opens (creating if needed, mode 0600) the database file at path
// with bbolt's exclusive file lock, waiting at most timeout for another
// process to release it.
func Open(path string, opts *bbolt.Options) (*Store, error) {
	db, err := bbolt.Open(path, 0o600, opts)
	if err != nil {
		return nil, err
	}
	return &Store{db: db, owned: true}, nil
}

// DB returns the bbolt database (for backups, which copy it with
// Tx.WriteTo, and metrics).
func (s *Store) DB() *bbolt.DB { return s.db }

// Driver implements store.Store.
func (s *Store) Driver() string { return "bbolt" }

// Feed implements store.Store: one process, nothing to deliver.
func (s *Store) Feed() store.Feed { return store.StillFresh{} }

// Ping implements store.Store.
func (s *Store) Ping(context.Context) error {
	return s.db.View(func(*bbolt.Tx) error { return nil })
}

// Close implements store.Store; it closes the database only if Open opened
// it.
func (s *Store) Close() error {
	if s.owned {
		return s.db.Close()
	}
	return nil
}

// Declare implements store.Store.
func (s *Store) Declare(_ context.Context, buckets ...string) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return fmt.Errorf("store: creating bucket %s: %w", b, err)
			}
		}
		return nil
	})
}

// View implements store.Store.
func (s *Store) View(_ context.Context, fn func(store.Tx) error) error {
	return s.db.View(func(btx *bbolt.Tx) error {
		t := &tx{tx: btx}
		if err := fn(t); err != nil {
			return err
		}
		return t.runHooks()
	})
}

// Update implements store.Store. bbolt has one writer at a time, so fn
// runs once.
func (s *Store) Update(_ context.Context, fn func(store.Tx) error) error {
	var t *tx
	var fnErr error
	err := s.db.Update(func(btx *bbolt.Tx) error {
		t = &tx{tx: btx}
		if fnErr = fn(t); fnErr != nil {
			return fnErr
		}
		fnErr = t.runHooks()
		return fnErr
	})
	switch {
	case err == nil || fnErr != nil:
		return err
	case t != nil && t.hooksRan:
		return fmt.Errorf("%w: %w: %w", store.ErrUnavailable, store.ErrCommit, err)
	default:
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
}

type tx struct {
	tx       *bbolt.Tx
	hooks    []func() error
	hooksRan bool
}

func (t *tx) Bucket(name string) store.Bucket {
	b := t.tx.Bucket([]byte(name))
	if b == nil {
		return nil // an untyped nil, not a nil *bbolt.Bucket in an interface
	}
	if !t.tx.Writable() {
		return readOnly{b}
	}
	return writable{b}
}

func (t *tx) Writable() bool { return t.tx.Writable() }

func (t *tx) BeforeCommit(fn func() error) { t.hooks = append(t.hooks, fn) }

func (t *tx) runHooks() error {
	t.hooksRan = len(t.hooks) > 0
	for _, h := range t.hooks {
		if err := h(); err != nil {
			return err
		}
	}
	return nil
}

// readOnly refuses writes with store.ErrReadOnly (bbolt would refuse them
// too, with its own error).
type readOnly struct{ b *bbolt.Bucket }

func (r readOnly) Get(k []byte) []byte                      { return r.b.Get(k) }
func (r readOnly) ForEach(fn func(k, v []byte) error) error { return r.b.ForEach(fn) }
func (r readOnly) Put(k, v []byte) error                    { return store.ErrReadOnly }
func (r readOnly) Delete(k []byte) error                    { return store.ErrReadOnly }

// writable is a bbolt bucket that refuses keys over store.MaxKeySize and
// values over store.MaxValueSize (bbolt's own limits are 32 KiB and 2 GiB)
// with store.ErrTooLarge, as every driver does, and copies the value.
type writable struct{ *bbolt.Bucket }

func (w writable) Put(k, v []byte) error {
	if err := store.CheckSize(k, v); err != nil {
		return err
	}
	// bbolt keeps v itself until the commit (it copies only the key);
	// the store's contract is that Put copies both.
	return w.Bucket.Put(k, append(make([]byte, 0, len(v)), v...))
}
