package migrate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// Files of an embedded data dir that the migration reads.
const (
	// StoreFile is hearth's own database (server.StoreName).
	StoreFile = "hearth.db"
	// CADBFile is the CA's smallstep nosql bbolt database.
	CADBFile = "ca/db"
)

// DefaultLockTimeout is how long the source's databases are waited for:
// long enough for a command that just finished to let go, short enough
// that a running server is reported at once.
const DefaultLockTimeout = 100 * time.Millisecond

// source is an embedded data dir opened for reading, with every lock that
// keeps `hearth serve` out while it is read: the audit log's lock file and
// both bbolt files, shared (read-only bbolt takes a shared flock; the
// server takes them exclusively).
type source struct {
	dir   string
	db    *bbolt.DB   // hearth.db, read only
	st    store.Store // the same, through the store seam
	cadb  *bbolt.DB   // ca/db, read only
	alock io.Closer   // audit/lock, shared
}

// openSource opens dir's stores read only, refusing (ErrServed) when a
// process has any of them open for writing.
func openSource(dir string, timeout time.Duration) (*source, error) {
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	if _, err := os.Stat(filepath.Join(dir, StoreFile)); err != nil {
		return nil, fmt.Errorf("migrate: %s is not a hearth data dir (no %s): pass the data dir of the installation to move with --from: %w", dir, StoreFile, err)
	}
	s := &source{dir: dir}
	var err error
	if s.alock, err = audit.LockShared(dir); err != nil {
		if errors.Is(err, audit.ErrWriterRunning) {
			return nil, fmt.Errorf("%w: stop `hearth serve` first: the audit log in %s is open for writing", ErrServed, filepath.Join(dir, audit.DirName))
		}
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if s.db, err = openBolt(filepath.Join(dir, StoreFile), timeout); err != nil {
		s.close()
		return nil, err
	}
	s.st = boltstore.New(s.db)
	if s.cadb, err = openBolt(filepath.Join(dir, CADBFile), timeout); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func openBolt(path string, timeout time.Duration) (*bbolt.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: timeout})
	switch {
	case errors.Is(err, bberrors.ErrTimeout):
		return nil, fmt.Errorf("%w: stop `hearth serve` first: %s is locked by another process (waited %v)", ErrServed, path, timeout)
	case err != nil:
		return nil, fmt.Errorf("migrate: opening %s: %w", path, err)
	}
	return db, nil
}

func (s *source) close() error {
	var errs []error
	if s.cadb != nil {
		errs = append(errs, s.cadb.Close())
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
	}
	if s.alock != nil {
		errs = append(errs, s.alock.Close())
	}
	return errors.Join(errs...)
}

// Tally is the number of records of one bucket (or table) and a digest of
// them (SHA-256 over every key and value, length-prefixed, in key order):
// two sides with equal tallies hold the same records.
type Tally struct {
	Records int    `json:"records"`
	Digest  []byte `json:"-"`
}

// tallier computes a Tally record by record.
type tallier struct {
	n int
	h hash.Hash
}

func newTallier() *tallier { return &tallier{h: sha256.New()} }

func (t *tallier) add(k, v []byte) {
	var l [8]byte
	binary.BigEndian.PutUint64(l[:], uint64(len(k)))
	t.h.Write(l[:])
	t.h.Write(k)
	binary.BigEndian.PutUint64(l[:], uint64(len(v)))
	t.h.Write(l[:])
	t.h.Write(v)
	t.n++
}

func (t *tallier) tally() Tally { return Tally{Records: t.n, Digest: t.h.Sum(nil)} }

// Tallies are the tallies of the buckets of one area, by name.
type Tallies map[string]Tally

// Records is the total number of records.
func (ts Tallies) Records() int {
	n := 0
	for _, t := range ts {
		n += t.Records
	}
	return n
}

// Names returns the bucket names in order.
func (ts Tallies) Names() []string {
	names := make([]string, 0, len(ts))
	for n := range ts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// diff describes how got differs from want ("" when it does not).
func (ts Tallies) diff(got Tallies) string {
	var b bytes.Buffer
	for _, n := range ts.Names() {
		w, g := ts[n], got[n]
		switch {
		case g.Records != w.Records:
			fmt.Fprintf(&b, "; %s: %d records, the source has %d", n, g.Records, w.Records)
		case !bytes.Equal(g.Digest, w.Digest):
			fmt.Fprintf(&b, "; %s: %d records but not the same ones", n, g.Records)
		}
	}
	for _, n := range got.Names() {
		if _, ok := ts[n]; !ok && got[n].Records > 0 {
			fmt.Fprintf(&b, "; %s: %d records the source does not have", n, got[n].Records)
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return b.String()[2:]
}

// boltBuckets lists the top-level buckets of a bbolt file. A nested bucket
// (which neither hearth nor smallstep's tables use) is refused: neither
// target can hold it.
func boltBuckets(db *bbolt.DB) ([]string, error) {
	var names []string
	err := db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			names = append(names, string(name))
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					return fmt.Errorf("migrate: %s: bucket %q holds a nested bucket %q, which the PostgreSQL store cannot hold", db.Path(), name, k)
				}
				return nil
			})
		})
	})
	return names, err
}

// storeTallies tallies the named buckets of st in one View (a missing
// bucket tallies as empty).
func storeTallies(ctx context.Context, st store.Store, names []string) (Tallies, error) {
	var ts Tallies
	err := st.View(ctx, func(tx store.Tx) error {
		var err error
		ts, err = txTallies(tx, names)
		return err
	})
	return ts, err
}

// txTallies tallies the named buckets inside tx.
func txTallies(tx store.Tx, names []string) (Tallies, error) {
	ts := Tallies{}
	for _, n := range names {
		t := newTallier()
		if b := tx.Bucket(n); b != nil {
			if err := b.ForEach(func(k, v []byte) error { t.add(k, v); return nil }); err != nil {
				return nil, err
			}
		}
		ts[n] = t.tally()
	}
	return ts, nil
}
