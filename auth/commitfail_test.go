package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"

	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// errStoreWrite stands for a bbolt commit that fails (I/O error, disk
// full): a fault that cannot be produced for real without a hook.
var errStoreWrite = errors.New("input/output error")

// failStoreWrites makes every commit of s roll back as a failed bbolt
// commit would, until the test ends or off is called.
func failStoreWrites(t *testing.T, s *Service) (off func()) {
	f := func() error { return errStoreWrite }
	s.failCommit.Store(&f)
	off = func() { s.failCommit.Store(nil) }
	t.Cleanup(off)
	return off
}

// dumpStore returns every key and value of the auth buckets, to show that
// a failed write left the store as it was.
func dumpStore(t *testing.T, db *bbolt.DB) string {
	t.Helper()
	var b bytes.Buffer
	err := db.View(func(tx *bbolt.Tx) error {
		for _, name := range []string{bucketUsers, bucketTokens, bucketRefresh, bucketIdentities, bucketLockout} {
			fmt.Fprintf(&b, "[%s]\n", name)
			if err := tx.Bucket([]byte(name)).ForEach(func(k, v []byte) error {
				fmt.Fprintf(&b, "%x=%s\n", k, v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// checkCorrected checks that evs are the entries of one change followed by
// one correcting entry for each, in order.
func checkCorrected(t *testing.T, evs []audit.Event, want ...string) {
	t.Helper()
	if len(evs) != 2*len(want) {
		t.Fatalf("entries %v, want %v each followed by its correction", names(evs), want)
	}
	for i, name := range want {
		orig, fix := evs[i], evs[len(want)+i]
		if orig.Name != name || orig.Outcome != audit.OutcomeSuccess {
			t.Errorf("entry %d = %s/%s, want %s/success", i, orig.Name, orig.Outcome, name)
		}
		ref := orig.Name + " " + orig.Resource + " " + orig.Time.UTC().Format(time.RFC3339Nano)
		if fix.Name != name || fix.Outcome != audit.OutcomeError || fix.Reason != "not applied: the store write failed" ||
			fix.Meta["corrects"] != ref || fix.Resource != orig.Resource || fix.Principal != orig.Principal || fix.Client != orig.Client {
			t.Errorf("correction %d = %+v, want an error entry for %s with corrects %q", i, fix, name, ref)
		}
	}
}

func names(evs []audit.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Name+"/"+e.Outcome)
	}
	return out
}

// TestFailedStoreWriteIsCorrected: when the store write fails after the
// audit entries of a change were recorded, the client gets 503, the store
// is unchanged, no token is live, and each entry is followed by an error
// entry naming it. With the store working, nothing is corrected.
func TestFailedStoreWriteIsCorrected(t *testing.T) {
	cases := []struct {
		name  string
		setup func(h *harness)
		do    func(h *harness) response
		want  []string // the entries the change records
		after func(t *testing.T, h *harness)
	}{
		{
			name: "add user",
			do: func(h *harness) response {
				return h.post("/.hearth/v1/admin/users", AddUserRequest{Name: "bob", Caps: []string{"system:read"}, Password: alicePw})
			},
			want: []string{audit.EventUserChange},
			after: func(t *testing.T, h *harness) {
				if r := h.login("bob", alicePw); r.status != http.StatusUnauthorized {
					t.Errorf("login of the user whose addition failed = %d, want 401", r.status)
				}
			},
		},
		{
			name:  "login",
			setup: func(h *harness) { h.addUser("alice") },
			do:    func(h *harness) response { return h.login("alice", alicePw) },
			want:  []string{audit.EventAuthLogin, audit.EventTokenIssue},
		},
		{
			name: "unlock",
			setup: func(h *harness) {
				h.addUser("alice")
				for range 5 {
					h.login("alice", "wrong password typed")
				}
				if err := h.s.flush(); err != nil { // the lockout is in the store
					h.t.Fatal(err)
				}
			},
			do:   func(h *harness) response { return h.post("/.hearth/v1/admin/users/alice/unlock", nil) },
			want: []string{audit.EventAuthUnlock},
			after: func(t *testing.T, h *harness) {
				if r := h.login("alice", alicePw); r.status != http.StatusTooManyRequests {
					t.Errorf("login after a failed unlock = %d %s, want 429 (still locked)", r.status, r.body)
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			if c.setup != nil {
				c.setup(h)
			}
			before, n := dumpStore(t, h.db), len(h.rec.all())
			off := failStoreWrites(t, h.s)
			r := c.do(h)
			if r.status != http.StatusServiceUnavailable {
				t.Fatalf("with the store write failing: %d %s, want 503", r.status, r.body)
			}
			if after := dumpStore(t, h.db); after != before {
				t.Errorf("store changed by a failed write:\nbefore %s\nafter  %s", before, after)
			}
			h.s.mu.RLock()
			live := len(h.s.tokens)
			h.s.mu.RUnlock()
			if live != 0 {
				t.Errorf("%d tokens live after a failed write, want 0", live)
			}
			checkCorrected(t, h.rec.all()[n:], c.want...)
			if c.after != nil {
				c.after(t, h)
			}

			// With the store working the same change succeeds and
			// corrects nothing.
			off()
			n = len(h.rec.all())
			if r := c.do(h); r.status/100 != 2 {
				t.Fatalf("with the store working: %d %s, want 2xx", r.status, r.body)
			}
			evs := h.rec.all()[n:]
			if len(evs) != len(c.want) {
				t.Errorf("entries %v, want %v", names(evs), c.want)
			}
			for _, e := range evs {
				if e.Outcome == audit.OutcomeError || e.Meta["corrects"] != "" {
					t.Errorf("correcting entry %+v with the store working", e)
				}
			}
		})
	}
}

// flaky records like recorder but fails the calls numbered from..to
// (counting from 1), as a log that breaks in the middle of a change's
// entries.
type flaky struct {
	rec      *recorder
	calls    int
	from, to int
}

func (f *flaky) Record(ctx context.Context, e audit.Event) error {
	f.calls++ // commit records from one goroutine at a time: under bbolt's writer lock or after it
	if f.calls >= f.from && f.calls <= f.to {
		return errors.New("disk full")
	}
	return f.rec.Record(ctx, e)
}

// TestAuditFailurePartWayIsCorrected: if the log fails after the first of
// a change's entries, the change is refused and the entry that was
// recorded is corrected if the log takes the correction.
func TestAuditFailurePartWayIsCorrected(t *testing.T) {
	cases := []struct {
		name string
		to   int
		want []string
	}{
		{"log down from the second entry", 100, []string{"auth.login/success"}},
		{"log fails one write", 2, []string{"auth.login/success", "auth.login/error"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			h.addUser("alice")
			before, n := dumpStore(t, h.db), len(h.rec.all())
			h.s.audit = &flaky{rec: h.rec, from: 2, to: c.to}
			_, err := h.s.Login(context.Background(), LoginRequest{Username: "alice", Password: alicePw, Client: "127.0.0.1:5000"})
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("login with the log failing part-way: %v, want ErrUnavailable", err)
			}
			if dumpStore(t, h.db) != before {
				t.Error("store changed by a refused login")
			}
			evs := h.rec.all()[n:]
			if got := names(evs); !slices.Equal(got, c.want) {
				t.Fatalf("entries %v, want %v", got, c.want)
			}
			if len(evs) == 2 && (evs[1].Meta["corrects"] != evs[0].Name+" "+evs[0].Resource+" "+evs[0].Time.Format(time.RFC3339Nano) ||
				evs[1].Reason != "not applied: the audit log failed before all of the change's entries were recorded") {
				t.Errorf("correction %+v", evs[1])
			}
		})
	}
}

// TestCorrectionNamesLogIndex: with the real audit log, the correcting
// entry names the index of the entry it corrects.
func TestCorrectionNamesLogIndex(t *testing.T) {
	dir := t.TempDir()
	if err := audit.Init(dir); err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	l, err := audit.Open(dir, audit.Config{}, audit.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	s, err := Open(boltstore.New(db), Config{Argon2: tinyArgon2}, Options{Audit: l, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	failStoreWrites(t, s)
	if err := s.AddUser(context.Background(), "bob", []string{"system:read"}, alicePw); !errors.Is(err, ErrUnavailable) || !errors.Is(err, errStoreWrite) {
		t.Fatalf("AddUser with the store write failing: %v, want ErrUnavailable wrapping the store's error", err)
	}
	es, err := l.Tail(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 {
		t.Fatalf("log holds %d entries at its end, want 2", len(es))
	}
	orig, fix := es[0], es[1]
	if orig.Name != audit.EventUserChange || orig.Outcome != audit.OutcomeSuccess ||
		fix.Outcome != audit.OutcomeError || fix.Meta["corrects_index"] != strconv.FormatInt(orig.Index, 10) ||
		fix.Meta["corrects"] != orig.Name+" user:bob "+orig.Time.UTC().Format(time.RFC3339Nano) {
		t.Fatalf("log ends with %+v then %+v, want a user.change and its correction naming index %d", orig, fix, orig.Index)
	}
}

// rerunStore runs the next Update's fn, and its BeforeCommit hooks, in a
// transaction that then fails to commit, and answers ErrConflict, as
// pgstore does for a serialization failure raised at COMMIT after the
// hooks ran (pgstore's TestUpdateNoRetryAfterHooks makes one for real,
// with a write skew; here it must happen inside auth's own commit).
type rerunStore struct {
	store.Store
	armed atomic.Bool
}

type hookTx struct {
	store.Tx
	hooks []func() error
}

func (t *hookTx) BeforeCommit(f func() error) { t.hooks = append(t.hooks, f) }

func (s *rerunStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	if s.armed.CompareAndSwap(true, false) {
		errCommit := errors.New("could not serialize access (at COMMIT)")
		_ = s.Store.Update(ctx, func(tx store.Tx) error {
			h := &hookTx{Tx: tx}
			if err := fn(h); err != nil {
				return err
			}
			for _, f := range h.hooks {
				if err := f(); err != nil {
					return err
				}
			}
			return errCommit // rolls the first run back
		})
		// What pgstore returns when COMMIT conflicts after the hooks ran:
		// it does not run fn again itself; the caller may.
		return fmt.Errorf("%w: %w: %w: %w", store.ErrUnavailable, store.ErrCommit, store.ErrConflict, errCommit)
	}
	return s.Store.Update(ctx, fn)
}

// TestRerunAfterHooksIsCorrected: when a commit conflicts with a
// concurrent one after its hooks ran (store.ErrConflict), the first run's
// entries are corrected, its token never becomes live, and the change is
// run again and stands.
func TestRerunAfterHooksIsCorrected(t *testing.T) {
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	st := &rerunStore{Store: boltstore.New(db)}
	rec := &recorder{}
	s, err := Open(st, Config{Argon2: tinyArgon2}, Options{Audit: rec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if err := s.AddUser(ctx, "alice", []string{"system:read"}, alicePw); err != nil {
		t.Fatal(err)
	}
	n := len(rec.all())
	st.armed.Store(true)
	sess, err := s.IssueSession(ctx, "alice", "password", false, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	evs := rec.all()[n:]
	if len(evs) != 3 {
		t.Fatalf("entries %v, want the first run's token.issue, its correction, the second run's token.issue", names(evs))
	}
	checkCorrected(t, evs[:2], audit.EventTokenIssue)
	if evs[2].Name != audit.EventTokenIssue || evs[2].Outcome != audit.OutcomeSuccess || evs[2].Meta["token_id"] == evs[0].Meta["token_id"] {
		t.Errorf("last entry %+v, want the second run's token.issue", evs[2])
	}
	s.mu.RLock()
	live := len(s.tokens)
	s.mu.RUnlock()
	if _, err := s.AuthenticateToken(ctx, sess.Token); err != nil || live != 1 {
		t.Errorf("the session issued: %v, %d tokens live; want it alone", err, live)
	}
}
