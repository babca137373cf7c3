package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/jackc/pgx/v5"
)

var bg = context.Background()

// replicaName is a unique application_name, so that a test can find this
// store's connections in pg_stat_activity.
func replicaName() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "hearth-t-" + hex.EncodeToString(b)
}

func put(t *testing.T, s store.Store, bucket, key, value string) {
	t.Helper()
	if err := s.Update(bg, func(tx store.Tx) error { return tx.Bucket(bucket).Put([]byte(key), []byte(value)) }); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, s store.Store, bucket, key string) string {
	t.Helper()
	var v string
	if err := s.View(bg, func(tx store.Tx) error { v = string(tx.Bucket(bucket).Get([]byte(key))); return nil }); err != nil {
		t.Fatal(err)
	}
	return v
}

// terminate kills the backends of db whose application_name is app and
// whose state matches (a LIKE pattern), waiting until they are gone, and
// returns how many it killed.
func terminate(t *testing.T, db *pgtest.DB, app, state string) int {
	t.Helper()
	var n int
	if err := db.Admin(t).QueryRow(bg, "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2 AND state LIKE $3",
		app, db.Name, state).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A conflicting commit by another replica between fn's read and its write
// makes PostgreSQL refuse the first run (40001); Update runs fn again on
// the new state, and the BeforeCommit hook registered in both runs runs
// once, after the last.
func TestUpdateRetriesSerializationFailure(t *testing.T) {
	db := pgtest.New(t)
	a, b := open(t, db, Options{}), open(t, db, Options{})
	if err := a.Declare(bg, "b"); err != nil {
		t.Fatal(err)
	}
	put(t, a, "b", "k", "0")
	runs, hooks, hookSawRun := 0, 0, 0
	if err := a.Update(bg, func(tx store.Tx) error {
		runs++
		run := runs
		tx.BeforeCommit(func() error { hooks++; hookSawRun = run; return nil })
		v := tx.Bucket("b").Get([]byte("k"))
		if runs == 1 {
			put(t, b, "b", "k", string(v)+"b")
		}
		return tx.Bucket("b").Put([]byte("k"), append(append([]byte{}, v...), 'a'))
	}); err != nil {
		t.Fatal(err)
	}
	if runs != 2 || hooks != 1 || hookSawRun != 2 {
		t.Errorf("fn ran %d times, hooks %d times (after run %d); want 2, 1, after run 2", runs, hooks, hookSawRun)
	}
	if got := read(t, b, "b", "k"); got != "0ba" {
		t.Errorf("k = %q, want 0ba (b's write, then a's on top)", got)
	}

	// With one attempt allowed, the same conflict is ErrUnavailable and
	// nothing of a's is committed.
	one := open(t, db, Options{MaxAttempts: 1})
	err := one.Update(bg, func(tx store.Tx) error {
		v := tx.Bucket("b").Get([]byte("k"))
		put(t, b, "b", "k", "b-won")
		return tx.Bucket("b").Put([]byte("k"), append(v, 'x'))
	})
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrCommit) {
		t.Errorf("out of attempts: %v, want ErrUnavailable", err)
	}
	if got := read(t, b, "b", "k"); got != "b-won" {
		t.Errorf("k = %q, want b-won", got)
	}
}

// The backend of an open Update is killed: the failure is sticky (Get then
// returns nil, Put fails), Update returns ErrUnavailable although fn
// returned nil, nothing is committed, and the next Update works on a new
// connection.
func TestUpdateBackendKilled(t *testing.T) {
	db := pgtest.New(t)
	app := replicaName()
	a, b := open(t, db, Options{ApplicationName: app}), open(t, db, Options{})
	if err := a.Declare(bg, "b"); err != nil {
		t.Fatal(err)
	}
	put(t, a, "b", "k", "before")
	err := a.Update(bg, func(tx store.Tx) error {
		bk := tx.Bucket("b")
		if string(bk.Get([]byte("k"))) != "before" {
			t.Error("first Get did not read the record")
		}
		if n := terminate(t, db, app, "idle in transaction%"); n != 1 {
			t.Errorf("killed %d backends in a transaction, want 1", n)
		}
		if v := bk.Get([]byte("other")); v != nil {
			t.Errorf("Get after the kill = %q, want nil", v)
		}
		if err := bk.Put([]byte("k"), []byte("after")); err == nil {
			t.Error("Put after a failed statement succeeded")
		}
		if v := bk.Get([]byte("k")); v != nil {
			t.Errorf("Get of a cached record after the failure = %q, want nil", v)
		}
		return nil
	})
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrCommit) {
		t.Errorf("Update = %v, want ErrUnavailable without ErrCommit", err)
	}
	if got := read(t, b, "b", "k"); got != "before" {
		t.Errorf("k = %q, want before", got)
	}
	put(t, a, "b", "k", "recovered")
	if got := read(t, b, "b", "k"); got != "recovered" {
		t.Errorf("k = %q after a new Update, want recovered", got)
	}
}

// The backend dies while a BeforeCommit hook runs (after the writes were
// sent, before COMMIT): Update returns ErrCommit with ErrUnavailable, so
// the caller knows its hook's effects happened without the change, and
// nothing is committed.
func TestUpdateCommitFailsAfterHooks(t *testing.T) {
	db := pgtest.New(t)
	app := replicaName()
	a, b := open(t, db, Options{ApplicationName: app}), open(t, db, Options{})
	if err := a.Declare(bg, "b"); err != nil {
		t.Fatal(err)
	}
	hooks := 0
	err := a.Update(bg, func(tx store.Tx) error {
		tx.BeforeCommit(func() error {
			hooks++
			if n := terminate(t, db, app, "idle in transaction%"); n != 1 {
				t.Errorf("killed %d backends in a transaction, want 1", n)
			}
			return nil
		})
		return tx.Bucket("b").Put([]byte("k"), []byte("lost"))
	})
	if !errors.Is(err, store.ErrCommit) || !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrConflict) || hooks != 1 {
		t.Errorf("Update = %v after %d hook runs; want ErrCommit and ErrUnavailable (not ErrConflict: the backend died) after 1", err, hooks)
	}
	if got := read(t, b, "b", "k"); got != "" {
		t.Errorf("k = %q, want nothing committed", got)
	}
}

// A View of a database that went away, and an Update whose context has
// ended, are ErrUnavailable; fn's own error is not masked otherwise.
func TestUnavailable(t *testing.T) {
	db := pgtest.New(t)
	a := open(t, db, Options{})
	if err := a.Declare(bg, "b"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	err := a.Update(ctx, func(tx store.Tx) error {
		cancel()
		tx.Bucket("b").Get([]byte("k"))
		return tx.Bucket("b").Put([]byte("k"), []byte("v"))
	})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Update with its context ended = %v, want ErrUnavailable", err)
	}
	if got := read(t, a, "b", "k"); got != "" {
		t.Errorf("k = %q, want nothing committed", got)
	}
	if err := a.Ping(bg); err != nil {
		t.Errorf("Ping = %v", err)
	}
	a.Close()
	if err := a.View(bg, func(store.Tx) error { return nil }); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("View after Close = %v, want ErrUnavailable", err)
	}
	if err := a.Ping(bg); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping after Close = %v, want ErrUnavailable", err)
	}
}

// Open refuses a DSN with a password before connecting, and bucket names
// the table cannot hold.
func TestOpenRefuses(t *testing.T) {
	if _, err := Open(bg, "postgres://u:secret@127.0.0.1:1/db", Options{}); err == nil {
		t.Error("Open accepted a DSN with a password")
	}
	db := pgtest.New(t)
	a := open(t, db, Options{})
	for _, name := range []string{"", "nul\x00", "\xff", string(make([]byte, 256))} {
		if err := a.Declare(bg, name); err == nil {
			t.Errorf("Declare(%q) succeeded", name)
		}
	}
}

// A COMMIT refused with a serialization failure after the hooks ran is
// not retried: the hooks' effects (audit entries, index changes) happened
// once and must not happen twice. Here another replica commits a write
// skew against a's transaction while a's hook runs (a read y and wrote x,
// b reads x and y and writes y), so PostgreSQL must refuse one of the two;
// whatever it refuses, a's hook ran exactly once, and a's failure, if it
// is a's, is ErrCommit.
func TestUpdateNoRetryAfterHooks(t *testing.T) {
	db := pgtest.New(t)
	a, b := open(t, db, Options{}), open(t, db, Options{MaxAttempts: 1})
	if err := a.Declare(bg, "b"); err != nil {
		t.Fatal(err)
	}
	put(t, a, "b", "x", "0")
	put(t, a, "b", "y", "0")
	hooks, bErrs := 0, []error{}
	err := a.Update(bg, func(tx store.Tx) error {
		bk := tx.Bucket("b")
		y := bk.Get([]byte("y"))
		tx.BeforeCommit(func() error {
			hooks++
			bErrs = append(bErrs, b.Update(bg, func(tx store.Tx) error {
				bk := tx.Bucket("b")
				x := bk.Get([]byte("x"))
				return bk.Put([]byte("y"), append([]byte("b saw x="), x...))
			}))
			return nil
		})
		return bk.Put([]byte("x"), append([]byte("a saw y="), y...))
	})
	if hooks != 1 {
		t.Fatalf("a's hook ran %d times, want 1 (Update = %v; b: %v)", hooks, err, bErrs)
	}
	if err != nil && (!errors.Is(err, store.ErrCommit) || !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, store.ErrConflict)) {
		t.Errorf("a's Update = %v, want nil or ErrCommit with ErrConflict and ErrUnavailable", err)
	}
	if err == nil && bErrs[0] == nil {
		t.Errorf("both sides of a write skew committed (x=%q, y=%q): not serializable", read(t, a, "b", "x"), read(t, a, "b", "y"))
	}
	t.Logf("a: %v; b: %v; x=%q y=%q", err, bErrs[0], read(t, a, "b", "x"), read(t, a, "b", "y"))
}

// Every connection asks the server for TCP keepalives (25 s to drop the
// backend of a vanished replica, and with it the audit sequencer's lock),
// and so do the connections copied from the pool's configuration (the
// feed's, the sequencer's).
func TestKeepalives(t *testing.T) {
	db := pgtest.New(t)
	s := open(t, db, Options{})
	for _, k := range []string{"tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count"} {
		var v string
		if err := s.Pool().QueryRow(bg, "SHOW "+k).Scan(&v); err != nil {
			t.Fatal(err)
		}
		cc := s.Pool().Config().ConnConfig.Copy()
		conn, err := pgx.ConnectConfig(bg, cc)
		if err != nil {
			t.Fatal(err)
		}
		var copied string
		err = conn.QueryRow(bg, "SHOW "+k).Scan(&copied)
		conn.Close(bg)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}[k]
		if v != want || copied != want {
			t.Errorf("%s = %q on the pool, %q on a copied configuration; want %q", k, v, copied, want)
		}
	}
}
