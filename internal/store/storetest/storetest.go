// Package storetest is the conformance suite of internal/store: every
// driver runs it (boltstore and pgstore, from their tests), so that auth
// and ca can rely on the same semantics on one machine and across
// replicas. The races run over two handles on one database — for bbolt
// the same Store twice, for PostgreSQL two Opens, i.e. two replicas — and
// check the invariants hearth's callers build on them: a single-use record
// is used once, a counter loses no increment, a record created if absent
// has one creator.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
)

// Open returns two handles on one fresh, empty database, closed at
// t.Cleanup.
type Open func(t testing.TB) (a, b store.Store)

// Race sizes: racers at once, and rounds.
const (
	Racers = 8
	Trials = 100
)

// Run runs every case of the suite, each on its own database.
func Run(t *testing.T, open Open) {
	cases := []struct {
		name string
		fn   func(*testing.T, Open)
	}{
		{"CRUD", testCRUD},
		{"Limits", testLimits},
		{"ViewIsReadOnly", testViewReadOnly},
		{"UndeclaredBucket", testUndeclared},
		{"FnErrorRollsBack", testFnError},
		{"Hooks", testHooks},
		{"HooksOnceUnderRetries", testHooksOnce},
		{"RaceSingleUse", testRaceSingleUse},
		{"RaceCounter", testRaceCounter},
		{"RaceCreateIfAbsent", testRaceCreate},
		{"Feed", testFeed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, open) })
	}
}

var bg = context.Background()

func declare(t *testing.T, s store.Store, buckets ...string) {
	t.Helper()
	if err := s.Declare(bg, buckets...); err != nil {
		t.Fatal(err)
	}
}

func update(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.Update(bg, fn); err != nil {
		t.Fatal(err)
	}
}

// get reads one record (a copy) in a View.
func get(t *testing.T, s store.Store, bucket, key string) []byte {
	t.Helper()
	var v []byte
	if err := s.View(bg, func(tx store.Tx) error {
		if got := tx.Bucket(bucket).Get([]byte(key)); got != nil {
			v = append([]byte{}, got...)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// keys lists a bucket's records as key=value in ForEach order.
func keys(t *testing.T, tx store.Tx, bucket string) []string {
	t.Helper()
	var out []string
	if err := tx.Bucket(bucket).ForEach(func(k, v []byte) error {
		out = append(out, fmt.Sprintf("%x=%s", k, v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func equal(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// Records written in an Update are read back by the same transaction and,
// after the commit, by the other handle; ForEach visits keys in byte order
// and sees the transaction's own writes and deletes; values are copied on
// Put; an empty value is a present record; deleting a missing key is no
// error.
func testCRUD(t *testing.T, open Open) {
	a, b := open(t)
	declare(t, a, "one", "two")
	update(t, a, func(tx store.Tx) error {
		if !tx.Writable() {
			t.Error("an Update transaction is not writable")
		}
		one := tx.Bucket("one")
		val := []byte("v-ab")
		for _, kv := range [][2]string{{"\xff", "v-ff"}, {"b", "v-b"}, {"a", "v-a"}, {"\x00", "v-00"}} {
			if err := one.Put([]byte(kv[0]), []byte(kv[1])); err != nil {
				return err
			}
		}
		if err := one.Put([]byte("ab"), val); err != nil {
			return err
		}
		val[0] = 'X' // Put copied it
		if err := one.Put([]byte("empty"), []byte{}); err != nil {
			return err
		}
		if err := tx.Bucket("two").Put([]byte("a"), []byte("other bucket")); err != nil {
			return err
		}
		if got := one.Get([]byte("b")); string(got) != "v-b" {
			t.Errorf("own write: Get = %q, want v-b", got)
		}
		if err := one.Delete([]byte("b")); err != nil {
			return err
		}
		if err := one.Delete([]byte("never")); err != nil {
			t.Errorf("Delete of a missing key: %v", err)
		}
		if got := one.Get([]byte("b")); got != nil {
			t.Errorf("own delete: Get = %q, want nil", got)
		}
		if got := one.Get([]byte("missing")); got != nil {
			t.Errorf("missing key: Get = %q, want nil", got)
		}
		want := []string{"00=v-00", "61=v-a", "6162=v-ab", "656d707479=", "ff=v-ff"}
		if got := keys(t, tx, "one"); !equal(got, want) {
			t.Errorf("ForEach in the writing transaction = %v, want %v", got, want)
		}
		return nil
	})
	update(t, b, func(tx store.Tx) error {
		one := tx.Bucket("one")
		if got := one.Get([]byte("ab")); string(got) != "v-ab" {
			t.Errorf("other handle: Get(ab) = %q, want v-ab", got)
		}
		if got := one.Get([]byte("empty")); got == nil || len(got) != 0 {
			t.Errorf("empty value: Get = %#v, want a non-nil empty slice", got)
		}
		// Overwrite and delete after a ForEach loaded the bucket.
		want := []string{"00=v-00", "61=v-a", "6162=v-ab", "656d707479=", "ff=v-ff"}
		if got := keys(t, tx, "one"); !equal(got, want) {
			t.Errorf("ForEach on the other handle = %v, want %v", got, want)
		}
		if err := one.Put([]byte("a"), []byte("v-a2")); err != nil {
			return err
		}
		if err := one.Delete([]byte("\xff")); err != nil {
			return err
		}
		if err := one.Put([]byte("c"), []byte("v-c")); err != nil {
			return err
		}
		want = []string{"00=v-00", "61=v-a2", "6162=v-ab", "63=v-c", "656d707479="}
		if got := keys(t, tx, "one"); !equal(got, want) {
			t.Errorf("ForEach after own writes = %v, want %v", got, want)
		}
		return nil
	})
	if err := a.View(bg, func(tx store.Tx) error {
		if tx.Writable() {
			t.Error("a View transaction is writable")
		}
		want := []string{"00=v-00", "61=v-a2", "6162=v-ab", "63=v-c", "656d707479="}
		if got := keys(t, tx, "one"); !equal(got, want) {
			t.Errorf("ForEach after commit = %v, want %v", got, want)
		}
		if got := keys(t, tx, "two"); !equal(got, []string{"61=other bucket"}) {
			t.Errorf("bucket two = %v", got)
		}
		// ForEach stops at fn's error and returns it.
		stop := errors.New("stop")
		n := 0
		if err := tx.Bucket("one").ForEach(func(k, v []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Errorf("ForEach with a failing fn: %v after %d calls, want stop after 1", err, n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Put refuses an empty key and, with ErrTooLarge, keys and values over the
// limits; a value of exactly MaxValueSize is stored.
func testLimits(t *testing.T, open Open) {
	a, b := open(t)
	declare(t, a, "b")
	big := make([]byte, store.MaxValueSize)
	longKey := make([]byte, store.MaxKeySize)
	rand.Read(big) // incompressible, as keys and values may be
	rand.Read(longKey)
	update(t, a, func(tx store.Tx) error {
		bk := tx.Bucket("b")
		if err := bk.Put(nil, []byte("x")); err == nil {
			t.Error("Put with an empty key succeeded")
		}
		if err := bk.Put(bytes.Repeat([]byte("k"), store.MaxKeySize+1), []byte("x")); !errors.Is(err, store.ErrTooLarge) {
			t.Errorf("Put of a key over MaxKeySize: %v, want ErrTooLarge", err)
		}
		if err := bk.Put([]byte("k"), append(big, 0)); !errors.Is(err, store.ErrTooLarge) {
			t.Errorf("Put of a value over MaxValueSize: %v, want ErrTooLarge", err)
		}
		return bk.Put(longKey, big)
	})
	if got := get(t, b, "b", string(longKey)); !bytes.Equal(got, big) {
		t.Errorf("the largest record read back with %d bytes, want %d", len(got), len(big))
	}
}

// A View refuses Put and Delete with ErrReadOnly.
func testViewReadOnly(t *testing.T, open Open) {
	a, _ := open(t)
	declare(t, a, "b")
	if err := a.View(bg, func(tx store.Tx) error {
		if err := tx.Bucket("b").Put([]byte("k"), []byte("v")); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("Put in a View: %v, want ErrReadOnly", err)
		}
		if err := tx.Bucket("b").Delete([]byte("k")); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("Delete in a View: %v, want ErrReadOnly", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, a, "b", "k"); got != nil {
		t.Errorf("a View's Put was stored: %q", got)
	}
}

// Bucket of a name never declared is nil, in View and Update; a bucket
// declared through one handle exists for the other.
func testUndeclared(t *testing.T, open Open) {
	a, b := open(t)
	check := func(s store.Store, name string, want bool) {
		t.Helper()
		for _, run := range []func(context.Context, func(store.Tx) error) error{s.View, s.Update} {
			if err := run(bg, func(tx store.Tx) error {
				if got := tx.Bucket(name) != nil; got != want {
					t.Errorf("Bucket(%q) exists = %v, want %v", name, got, want)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	check(b, "later", false)
	declare(t, a, "later")
	check(b, "later", true)
	check(a, "later", true)
	check(a, "never", false)
	declare(t, a, "later") // declaring again is no error
}

// An Update whose fn fails commits nothing and returns fn's error.
func testFnError(t *testing.T, open Open) {
	a, b := open(t)
	declare(t, a, "b")
	boom := errors.New("boom")
	err := a.Update(bg, func(tx store.Tx) error {
		if err := tx.Bucket("b").Put([]byte("k"), []byte("v")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Update = %v, want fn's error alone", err)
	}
	if got := get(t, b, "b", "k"); got != nil {
		t.Errorf("a failed Update's Put was stored: %q", got)
	}
}

// BeforeCommit hooks run once, in order, after fn and before the commit
// (they see fn's effects not yet visible to others); none runs when fn
// fails; a failing hook rolls the transaction back, stops the later hooks
// and is what Update returns; in a View, hooks run after fn.
func testHooks(t *testing.T, open Open) {
	a, b := open(t)
	declare(t, a, "b")
	var ran []string
	update(t, a, func(tx store.Tx) error {
		tx.BeforeCommit(func() error {
			ran = append(ran, "first")
			return nil
		})
		tx.BeforeCommit(func() error {
			ran = append(ran, "second")
			return nil
		})
		ran = append(ran, "fn")
		return tx.Bucket("b").Put([]byte("k"), []byte("v"))
	})
	if !equal(ran, []string{"fn", "first", "second"}) {
		t.Errorf("order = %v, want fn first second", ran)
	}
	if got := get(t, b, "b", "k"); string(got) != "v" {
		t.Errorf("after hooks: %q, want v", got)
	}

	ran = nil
	boom := errors.New("fn failed")
	err := a.Update(bg, func(tx store.Tx) error {
		tx.BeforeCommit(func() error { ran = append(ran, "hook"); return nil })
		return boom
	})
	if !errors.Is(err, boom) || len(ran) != 0 {
		t.Errorf("fn failing: Update = %v, hooks ran %v; want fn's error and no hook", err, ran)
	}

	hookErr := errors.New("hook failed")
	err = a.Update(bg, func(tx store.Tx) error {
		tx.BeforeCommit(func() error { ran = append(ran, "failing"); return hookErr })
		tx.BeforeCommit(func() error { ran = append(ran, "after"); return nil })
		return tx.Bucket("b").Put([]byte("k"), []byte("rolled back"))
	})
	if !errors.Is(err, hookErr) || errors.Is(err, store.ErrCommit) {
		t.Errorf("hook failing: Update = %v, want the hook's error (not ErrCommit)", err)
	}
	if !equal(ran, []string{"failing"}) {
		t.Errorf("hooks run = %v, want only the failing one", ran)
	}
	if got := get(t, b, "b", "k"); string(got) != "v" {
		t.Errorf("a failing hook's transaction committed: %q", got)
	}

	ran = nil
	if err := a.View(bg, func(tx store.Tx) error {
		tx.BeforeCommit(func() error { ran = append(ran, "view hook"); return nil })
		ran = append(ran, "view fn")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !equal(ran, []string{"view fn", "view hook"}) {
		t.Errorf("View: %v, want fn then hook", ran)
	}
}

// Racers increment one counter over both handles, each registering a hook:
// every committed Update ran its hook exactly once, however often its fn
// ran (a driver that retries runs fn more often than it commits).
func testHooksOnce(t *testing.T, open Open) {
	a, b := open(t)
	declare(t, a, "c")
	const each = 10
	var runs, hooks atomic.Int64
	var wg sync.WaitGroup
	for r := range Racers {
		s := []store.Store{a, b}[r%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if err := s.Update(bg, func(tx store.Tx) error {
					runs.Add(1)
					n := counter(tx.Bucket("c").Get([]byte("n")))
					tx.BeforeCommit(func() error { hooks.Add(1); return nil })
					return tx.Bucket("c").Put([]byte("n"), []byte(strconv.Itoa(n+1)))
				}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if h := hooks.Load(); h != Racers*each {
		t.Errorf("hooks ran %d times for %d commits", h, Racers*each)
	}
	if got := counter(get(t, a, "c", "n")); got != Racers*each {
		t.Errorf("counter = %d, want %d", got, Racers*each)
	}
	t.Logf("%s: fn ran %d times for %d commits", a.Driver(), runs.Load(), Racers*each)
}

func counter(v []byte) int {
	n, _ := strconv.Atoi(string(v))
	return n
}

// RACES: Racers at once over both handles consume one single-use record
// (read, check unused, mark used) per trial: exactly one winner each, and
// the record names it.
func testRaceSingleUse(t *testing.T, open Open) {
	a, b := open(t)
	declare(t, a, "tokens")
	errUsed := errors.New("used")
	key := func(trial int) []byte { return []byte("token-" + strconv.Itoa(trial)) }
	winner := make([]atomic.Int64, Trials)
	wins := pgtest.Race(Racers, Trials, func(trial int) {
		update(t, a, func(tx store.Tx) error { return tx.Bucket("tokens").Put(key(trial), []byte("unused")) })
	}, func(trial, racer int) bool {
		s := []store.Store{a, b}[racer%2]
		err := s.Update(bg, func(tx store.Tx) error {
			bk := tx.Bucket("tokens")
			if string(bk.Get(key(trial))) != "unused" {
				return errUsed
			}
			return bk.Put(key(trial), []byte("used by "+strconv.Itoa(racer)))
		})
		if err != nil && !errors.Is(err, errUsed) {
			t.Errorf("trial %d racer %d: %v", trial, racer, err)
		}
		if err == nil {
			winner[trial].Store(int64(racer))
		}
		return err == nil
	})
	for trial, n := range wins {
		if n != 1 {
			t.Errorf("trial %d: %d winners, want 1", trial, n)
			continue
		}
		if got, want := string(get(t, b, "tokens", string(key(trial)))), "used by "+strconv.Itoa(int(winner[trial].Load())); got != want {
			t.Errorf("trial %d: record %q, want %q", trial, got, want)
		}
	}
}

// RACES: Racers × Trials increments of one counter over both handles lose
// no update.
func testRaceCounter(t *testing.T, open Open) {
	a, b := open(t)
	declare(t, a, "c")
	var wg sync.WaitGroup
	var failed atomic.Int64
	for r := range Racers {
		s := []store.Store{a, b}[r%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range Trials {
				if err := s.Update(bg, func(tx store.Tx) error {
					n := counter(tx.Bucket("c").Get([]byte("n")))
					return tx.Bucket("c").Put([]byte("n"), []byte(strconv.Itoa(n+1)))
				}); err != nil {
					failed.Add(1)
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if got, want := counter(get(t, b, "c", "n")), Racers*Trials-int(failed.Load()); got != want || want != Racers*Trials {
		t.Errorf("counter = %d after %d successful increments (of %d)", got, want, Racers*Trials)
	}
}

// RACES: Racers create one record if it is absent, per trial: one creator.
func testRaceCreate(t *testing.T, open Open) {
	a, b := open(t)
	declare(t, a, "names")
	wins := pgtest.Race(Racers, Trials, nil, func(trial, racer int) bool {
		s := []store.Store{a, b}[racer%2]
		created := false
		err := s.Update(bg, func(tx store.Tx) error {
			created = false // fn may run again
			bk := tx.Bucket("names")
			k := []byte("name-" + strconv.Itoa(trial))
			if bk.Get(k) != nil {
				return nil
			}
			created = true
			return bk.Put(k, []byte(strconv.Itoa(racer)))
		})
		if err != nil {
			t.Errorf("trial %d racer %d: %v", trial, racer, err)
			return false
		}
		return created
	})
	for trial, n := range wins {
		if n != 1 {
			t.Errorf("trial %d: %d creators, want 1", trial, n)
		}
	}
}

// collector is one feed subscription, collecting what it hears.
type collector struct {
	mu      sync.Mutex
	batches int
	got     map[string]int // bucket/key → deliveries
	resyncs int
	seen    chan struct{}
}

func subscribe(t *testing.T, f store.Feed) *collector {
	t.Helper()
	c := &collector{got: map[string]int{}, seen: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() {
		done <- f.Subscribe(ctx, func(batch []store.Change) {
			c.mu.Lock()
			c.batches++
			for _, ch := range batch {
				if ch.Resync {
					c.resyncs++
				} else {
					c.got[ch.Bucket+"/"+string(ch.Key)]++
				}
			}
			c.mu.Unlock()
			select {
			case c.seen <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Subscribe returned %v after its context ended", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Subscribe did not return 10 s after its context ended")
		}
	})
	return c
}

func (c *collector) count(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[k]
}

// AwaitBounded checks a feed's promise for the change k (bucket/key)
// committed at committed: from committed + bound on, the feed has either
// delivered it or says it is not fresh (so caches are not trusted) — never
// fresh and ignorant. It also requires delivery within 10 s and returns the
// latency (well under the bound on an idle machine).
func (c *collector) awaitBounded(t *testing.T, f store.Feed, k string, committed time.Time, bound time.Duration) time.Duration {
	t.Helper()
	for {
		now := time.Now()
		fresh := f.Fresh(now) // before count: see store.Feed.Fresh
		if c.count(k) > 0 {
			return time.Since(committed)
		}
		if now.Sub(committed) >= bound && fresh {
			t.Fatalf("%s: %v after commit the feed says it is fresh (bound %v) but has not delivered it", k, now.Sub(committed), bound)
		}
		if now.Sub(committed) > 10*time.Second {
			t.Fatalf("%s not delivered within 10 s", k)
		}
		select {
		case <-c.seen:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Feed: on a store with one process (StillFresh) nothing is delivered and
// it is always fresh; otherwise every subscriber first gets a Resync, a
// change committed on one handle reaches the other's subscribers (within
// the 1 s bound, as Fresh promises), a rolled-back change never does, and
// Fresh is false for a moment past the bound with no read since.
func testFeed(t *testing.T, open Open) {
	a, b := open(t)
	declare(t, a, "b")
	if _, ok := b.Feed().(store.StillFresh); ok {
		c := subscribe(t, b.Feed())
		update(t, a, func(tx store.Tx) error { return tx.Bucket("b").Put([]byte("k"), []byte("v")) })
		if !b.Feed().Fresh(time.Now().Add(time.Hour)) {
			t.Error("a one-process feed is not fresh")
		}
		time.Sleep(50 * time.Millisecond)
		if c.count("b/k") != 0 {
			t.Error("a one-process feed delivered a change")
		}
		return
	}
	const bound = time.Second
	c1, c2 := subscribe(t, b.Feed()), subscribe(t, b.Feed())
	for _, c := range []*collector{c1, c2} {
		select {
		case <-c.seen:
		case <-time.After(10 * time.Second):
			t.Fatal("no first batch 10 s after Subscribe")
		}
		c.mu.Lock()
		if c.resyncs != 1 || c.batches != 1 {
			t.Errorf("first delivery: %d resyncs in %d batches, want one Resync batch", c.resyncs, c.batches)
		}
		c.mu.Unlock()
	}
	if !b.Feed().Fresh(time.Now()) {
		t.Error("a running feed is not fresh")
	}
	if b.Feed().Fresh(time.Now().Add(10 * bound)) {
		t.Error("the feed claims to be fresh 10 s from now")
	}
	boom := errors.New("roll back")
	if err := a.Update(bg, func(tx store.Tx) error {
		if err := tx.Bucket("b").Put([]byte("rolled-back"), []byte("v")); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	update(t, a, func(tx store.Tx) error {
		if err := tx.Bucket("b").Put([]byte("put"), []byte("v")); err != nil {
			return err
		}
		return tx.Bucket("b").Delete([]byte("deleted"))
	})
	committed := time.Now()
	for i, c := range []*collector{c1, c2} {
		lat := c.awaitBounded(t, b.Feed(), "b/put", committed, bound)
		c.awaitBounded(t, b.Feed(), "b/deleted", committed, bound)
		t.Logf("subscriber %d: delivered %v after commit", i+1, lat.Round(time.Millisecond))
	}
	// A change committed later than the rolled-back one has been read, so
	// the rolled-back one would have been delivered by now.
	if c1.count("b/rolled-back")+c2.count("b/rolled-back") != 0 {
		t.Error("a rolled-back change was delivered")
	}
}
