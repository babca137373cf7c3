package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hearth-home/hearth/internal/store"
)

const (
	beginUpdate = "BEGIN ISOLATION LEVEL SERIALIZABLE"
	beginView   = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

	sqlGet      = "SELECT value FROM " + Schema + ".kv WHERE bucket = $1 AND key = $2"
	sqlScan     = "SELECT key, value FROM " + Schema + ".kv WHERE bucket = $1 ORDER BY key"
	sqlDeclared = "SELECT EXISTS (SELECT 1 FROM " + Schema + ".buckets WHERE name = $1)"
	sqlPut      = "INSERT INTO " + Schema + ".kv (bucket, key, value) SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[]) ON CONFLICT (bucket, key) DO UPDATE SET value = EXCLUDED.value"
	sqlDelete   = "DELETE FROM " + Schema + ".kv WHERE (bucket, key) IN (SELECT * FROM unnest($1::text[], $2::bytea[]))"
	sqlChanges  = "INSERT INTO " + Schema + ".changes (bucket, key) SELECT * FROM unnest($1::text[], $2::bytea[])"
	// The notification of an Update that commits alone on this replica
	// is in its own transaction; while others commit, it goes out after
	// the commit in a transaction of its own (see the package doc).
	sqlNotify     = "BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_notify('" + Channel + "', ''); COMMIT"
	sqlNotifyInTx = "SELECT pg_notify('" + Channel + "', '')"
	retryBase     = 2 * time.Millisecond
	retryCeiling  = 100 * time.Millisecond
)

// retryable reports whether err is a serialization failure or a deadlock:
// the transaction was rolled back and running it again may succeed.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// Update implements store.Store: fn runs in a SERIALIZABLE transaction, and
// again from scratch (at most Options.MaxAttempts times in all, with full
// jitter backoff) while PostgreSQL reports a serialization failure or a
// deadlock before any BeforeCommit hook ran.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	defer conn.Release()
	for attempt := 1; ; attempt++ {
		err := s.attempt(ctx, conn, fn)
		var done afterHooks
		if errors.As(err, &done) {
			// The hooks ran: their effects (audit entries, index changes)
			// happened once and must not happen again, whatever the error
			// wraps (a COMMIT refused with 40001 is not retried).
			return done.err
		}
		if !retryable(err) || attempt >= s.opts.MaxAttempts {
			if retryable(err) {
				return fmt.Errorf("%w: gave up after %d serialization failures: %w", store.ErrUnavailable, attempt, err)
			}
			return err
		}
		s.retries.Add(1)
		backoff := min(retryCeiling, retryBase<<min(attempt-1, 10))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", store.ErrUnavailable, ctx.Err())
		case <-time.After(rand.N(backoff) + time.Microsecond):
		}
	}
}

// afterHooks carries an error that happened once BeforeCommit hooks had
// started: Update returns it as it is and never runs fn again.
type afterHooks struct{ err error }

func (a afterHooks) Error() string { return a.err.Error() }

// attempt runs fn once; a retryable error is returned unwrapped (the
// transaction was rolled back and no hook ran), every other driver error
// wrapped in ErrUnavailable, fn's and the hooks' own errors as they are.
func (s *Store) attempt(ctx context.Context, conn *pgxpool.Conn, fn func(store.Tx) error) error {
	t := &tx{s: s, ctx: ctx, conn: conn, writable: true}
	defer func() {
		if t.inflight {
			s.committing.Add(-1)
		}
	}()
	fnErr := fn(t)
	if t.err != nil {
		t.rollback()
		if retryable(t.err) {
			return t.err
		}
		return fmt.Errorf("%w: %w", store.ErrUnavailable, t.err)
	}
	if fnErr != nil {
		t.rollback()
		return fnErr
	}
	if len(t.hooks) == 0 {
		if err := t.flush(true); err != nil {
			t.rollback()
			if retryable(err) {
				return err
			}
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
		t.committed()
		return nil
	}
	if err := t.flush(false); err != nil {
		t.rollback()
		if retryable(err) {
			return err
		}
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	for _, h := range t.hooks {
		if err := h(); err != nil {
			t.rollback()
			return afterHooks{err}
		}
	}
	if t.begun {
		if err := t.commit(); err != nil {
			t.rollback()
			if retryable(err) {
				return afterHooks{fmt.Errorf("%w: %w: %w: %w", store.ErrUnavailable, store.ErrCommit, store.ErrConflict, err)}
			}
			return afterHooks{fmt.Errorf("%w: %w: %w", store.ErrUnavailable, store.ErrCommit, err)}
		}
	}
	t.committed()
	return nil
}

// committed tells the other replicas' feeds, if the transaction wrote.
func (t *tx) committed() {
	if t.wrote {
		t.s.notifySoon()
	}
}

// View implements store.Store: fn reads one snapshot (REPEATABLE READ READ
// ONLY; see the package doc for why not SERIALIZABLE).
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	defer conn.Release()
	t := &tx{s: s, ctx: ctx, conn: conn}
	fnErr := fn(t)
	if t.err == nil && fnErr == nil && t.begun {
		t.err = t.commit()
	} else {
		t.rollback()
	}
	switch {
	case t.err != nil:
		return fmt.Errorf("%w: %w", store.ErrUnavailable, t.err)
	case fnErr != nil:
		return fnErr
	}
	for _, h := range t.hooks {
		if err := h(); err != nil {
			return err
		}
	}
	return nil
}

// tx is one attempt of a transaction on one connection. Nothing is sent
// before its first statement, which carries the BEGIN.
type tx struct {
	s        *Store
	ctx      context.Context
	conn     *pgxpool.Conn
	writable bool
	begun    bool
	wrote    bool  // change rows were sent without a notification
	inflight bool  // counted in Store.committing
	err      error // sticky: the first driver error
	hooks    []func() error
	buckets  map[string]*bucket
	order    []*bucket // buckets in first-use order, for the flush
}

func (t *tx) Writable() bool { return t.writable }

func (t *tx) BeforeCommit(fn func() error) { t.hooks = append(t.hooks, fn) }

func (t *tx) Bucket(name string) store.Bucket {
	if b, ok := t.buckets[name]; ok {
		return b
	}
	if _, ok := t.s.declared.Load(name); !ok && t.err == nil {
		// After a driver error the answer is a bucket whose calls fail
		// (not nil, which a caller that declared it would not expect).
		var exists bool
		err := t.run(sqlDeclared, []any{name}, func(r pgx.Rows) error { return r.Scan(&exists) })
		if err == nil && !exists {
			return nil
		}
		if err == nil {
			t.s.declared.Store(name, struct{}{})
		}
	}
	b := &bucket{t: t, name: name, known: map[string][]byte{}}
	if t.buckets == nil {
		t.buckets = map[string]*bucket{}
	}
	t.buckets[name] = b
	t.order = append(t.order, b)
	return b
}

// fail records the transaction's first driver error.
func (t *tx) fail(err error) error {
	if t.err == nil {
		t.err = err
	}
	return t.err
}

func (t *tx) begin() string {
	if t.writable {
		return beginUpdate
	}
	return beginView
}

// run sends one statement (after BEGIN if it is the first) and calls row
// for each row it returns. A failure is sticky.
func (t *tx) run(sql string, args []any, row func(pgx.Rows) error) error {
	if t.err != nil {
		return t.err
	}
	if err := t.ctx.Err(); err != nil {
		return t.fail(err)
	}
	b := &pgx.Batch{}
	if !t.begun {
		b.Queue(t.begin())
	}
	b.Queue(sql, args...)
	err := t.send(b, row)
	if err != nil {
		return t.fail(err)
	}
	return nil
}

// send sends a batch; the last statement's rows go to row (when not nil).
func (t *tx) send(b *pgx.Batch, row func(pgx.Rows) error) error {
	t.begun = true // the connection may be in a transaction now, even on failure
	br := t.conn.SendBatch(t.ctx, b)
	var err error
	for i := range b.Len() {
		if i < b.Len()-1 || row == nil {
			var tag pgconn.CommandTag
			if tag, err = br.Exec(); err != nil {
				break
			}
			if b.QueuedQueries[i].SQL == "COMMIT" && tag.String() != "COMMIT" {
				err = fmt.Errorf("commit answered %q", tag.String())
				break
			}
			continue
		}
		var rows pgx.Rows
		if rows, err = br.Query(); err != nil {
			break
		}
		for rows.Next() {
			if err = row(rows); err != nil {
				break
			}
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// flush sends the buffered writes, their change rows and one notification
// (and COMMIT when commit is set) in one round trip.
func (t *tx) flush(commit bool) error {
	var pb, db []string
	var pk, pv, dk [][]byte
	for _, b := range t.order {
		keys := make([]string, 0, len(b.dirty))
		for k := range b.dirty {
			keys = append(keys, k)
		}
		sort.Strings(keys) // a stable lock order between transactions
		for _, k := range keys {
			if v := b.known[k]; v != nil {
				pb, pk, pv = append(pb, b.name), append(pk, []byte(k)), append(pv, v)
			} else {
				db, dk = append(db, b.name), append(dk, []byte(k))
			}
		}
	}
	batch := &pgx.Batch{}
	if len(pb)+len(db) > 0 {
		if !t.begun {
			batch.Queue(beginUpdate)
		}
		if len(pb) > 0 {
			batch.Queue(sqlPut, pb, pk, pv)
		}
		if len(db) > 0 {
			batch.Queue(sqlDelete, db, dk)
		}
		batch.Queue(sqlChanges, append(pb, db...), append(pk, dk...))
		t.inflight = true
		alone := t.s.committing.Add(1) == 1
		if mode := t.s.opts.notify; mode == notifyInTx || alone && mode == notifyAdaptive {
			batch.Queue(sqlNotifyInTx)
		} else {
			t.wrote = true
		}
	}
	if commit && (t.begun || batch.Len() > 0) {
		batch.Queue("COMMIT")
	}
	if batch.Len() == 0 {
		return nil
	}
	if err := t.ctx.Err(); err != nil {
		return err
	}
	if err := t.send(batch, nil); err != nil {
		return err
	}
	if commit {
		t.begun = false
	}
	return nil
}

// commit ends the transaction with COMMIT.
func (t *tx) commit() error {
	if err := t.send(&pgx.Batch{QueuedQueries: []*pgx.QueuedQuery{{SQL: "COMMIT"}}}, nil); err != nil {
		return err
	}
	t.begun = false
	return nil
}

// rollback ends the transaction if one may be open. A connection that
// cannot roll back is closed (the pool then drops it).
func (t *tx) rollback() {
	if !t.begun {
		return
	}
	t.begun = false
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := t.conn.Exec(ctx, "ROLLBACK"); err != nil {
		t.conn.Conn().Close(ctx)
	}
}

// bucket is a bucket in one transaction: the records read so far and the
// writes not yet sent, by key.
type bucket struct {
	t      *tx
	name   string
	known  map[string][]byte // key → value as the transaction sees it; nil: absent
	dirty  map[string]bool   // keys put or deleted in the transaction
	loaded bool              // every record of the bucket is in known
}

func (b *bucket) Get(key []byte) []byte {
	if b.t.err != nil {
		return nil
	}
	if v, ok := b.known[string(key)]; ok || b.loaded {
		return v
	}
	var v []byte
	found := false
	if err := b.t.run(sqlGet, []any{b.name, key}, func(r pgx.Rows) error {
		found = true
		return r.Scan(&v)
	}); err != nil {
		return nil
	}
	if found && v == nil {
		v = []byte{}
	}
	b.known[string(key)] = v
	return v
}

func (b *bucket) Put(key, value []byte) error {
	if err := store.CheckSize(key, value); err != nil {
		return err
	}
	return b.write(key, append(make([]byte, 0, len(value)), value...))
}

func (b *bucket) Delete(key []byte) error { return b.write(key, nil) }

// write buffers a Put (value not nil) or a Delete.
func (b *bucket) write(key, value []byte) error {
	switch {
	case !b.t.writable:
		return store.ErrReadOnly
	case b.t.err != nil:
		return b.t.err
	case len(key) == 0:
		return errors.New("pgstore: a record needs a key")
	}
	if b.dirty == nil {
		b.dirty = map[string]bool{}
	}
	b.known[string(key)] = value
	b.dirty[string(key)] = true
	return nil
}

// ForEach reads the whole bucket first (no cursor stays open while fn
// runs, so fn may Get from other buckets), then visits the records as the
// transaction sees them, in key order.
func (b *bucket) ForEach(fn func(k, v []byte) error) error {
	if b.t.err != nil {
		return b.t.err
	}
	if !b.loaded {
		if err := b.t.run(sqlScan, []any{b.name}, func(r pgx.Rows) error {
			var k, v []byte
			if err := r.Scan(&k, &v); err != nil {
				return err
			}
			if _, ok := b.known[string(k)]; !ok {
				if v == nil {
					v = []byte{}
				}
				b.known[string(k)] = v
			}
			return nil
		}); err != nil {
			return err
		}
		b.loaded = true
	}
	keys := make([][]byte, 0, len(b.known))
	for k, v := range b.known {
		if v != nil {
			keys = append(keys, []byte(k))
		}
	}
	sort.Slice(keys, func(i, j int) bool { return bytes.Compare(keys[i], keys[j]) < 0 })
	for _, k := range keys {
		if err := fn(k, b.known[string(k)]); err != nil {
			return err
		}
	}
	return nil
}
