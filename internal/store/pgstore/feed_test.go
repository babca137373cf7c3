package pgstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/storetest"
)

// replica is one replica's feed subscription.
type replica struct {
	*storetest.Collector
	feed *Feed
}

func subscribe(t *testing.T, s *Store) *replica {
	t.Helper()
	r := &replica{storetest.Subscribe(t, s.feed), s.feed}
	r.Await(t, "resync", 5*time.Second)
	return r
}

// awaitBounded is storetest's AwaitBounded with the feed's bound, logging
// the latency.
func (r *replica) awaitBounded(t *testing.T, k string, committed time.Time) {
	t.Helper()
	lat := r.AwaitBounded(t, r.feed, k, committed, r.feed.cfg.Bound)
	t.Logf("%s delivered %v after commit", k, lat.Round(time.Millisecond))
}

// twoReplicas opens two stores on a fresh database with bucket "b".
func twoReplicas(t *testing.T) (*pgtest.DB, *Store, *Store) {
	t.Helper()
	db := pgtest.New(t)
	a, b := open(t, db, Options{}), open(t, db, Options{})
	if err := a.Declare(bg, "b"); err != nil {
		t.Fatal(err)
	}
	return db, a, b
}

// Two Updates commit in the opposite order to their change rows' ids (the
// first one's writes are sent, then it waits in a BeforeCommit hook while
// the second commits). A reader keeping the highest id seen would skip the
// first once the second was delivered; the transaction-id cursor delivers
// both.
func TestFeedOutOfOrderCommit(t *testing.T) {
	db, a, b := twoReplicas(t)
	r := subscribe(t, b)
	inHook, release := make(chan struct{}), make(chan struct{})
	slow := make(chan error, 1)
	go func() {
		slow <- a.Update(bg, func(tx store.Tx) error {
			tx.BeforeCommit(func() error { close(inHook); <-release; return nil })
			return tx.Bucket("b").Put([]byte("slow"), []byte("v"))
		})
	}()
	<-inHook
	put(t, a, "b", "fast", "v")
	r.awaitBounded(t, "b/fast", time.Now())
	time.Sleep(3 * r.feed.cfg.Heartbeat) // a few reads with the slow one still open
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	r.awaitBounded(t, "b/slow", time.Now())
	var fastID, slowID int64
	pool := db.Pool(t)
	pool.QueryRow(bg, "SELECT id FROM hearth.changes WHERE key = 'fast'").Scan(&fastID)
	pool.QueryRow(bg, "SELECT id FROM hearth.changes WHERE key = 'slow'").Scan(&slowID)
	if slowID == 0 || slowID >= fastID {
		t.Fatalf("test setup: slow id %d not below fast id %d", slowID, fastID)
	}
}

// The listening connection is killed (pg_terminate_backend) and a change is
// committed while it is down: its notification is lost, and it is still
// delivered, by the read after reconnecting, with the feed never claiming
// freshness without it.
func TestFeedListenerKilled(t *testing.T) {
	db, a, b := twoReplicas(t)
	r := subscribe(t, b)
	// Both replicas listen; kill them all.
	awaitListeners(t, db, 2)
	if n := terminate(t, db, FeedApplicationName, "%"); n != 2 {
		t.Fatalf("terminated %d listening connections, want 2", n)
	}
	put(t, a, "b", "while-down", "v")
	r.awaitBounded(t, "b/while-down", time.Now())
}

// A replica whose feed cannot reach the database (its connection killed
// and new connections refused) stops being fresh within the bound, keeps
// serving nothing stale as fresh, and is fresh again — with the change
// committed meanwhile delivered — once the database is back.
func TestFeedFreshWhileUnreachable(t *testing.T) {
	db, a, b := twoReplicas(t)
	r := subscribe(t, b)
	admin := db.Admin(t)
	if !b.feed.Fresh(time.Now()) {
		t.Fatal("a running feed is not fresh")
	}
	awaitListeners(t, db, 2)
	if _, err := admin.Exec(bg, "ALTER DATABASE "+db.Name+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	allowed := false
	allow := func() {
		if !allowed {
			allowed = true
			if _, err := admin.Exec(bg, "ALTER DATABASE "+db.Name+" ALLOW_CONNECTIONS true"); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer allow()
	put(t, a, "b", "meanwhile", "v") // a's pool still has a connection
	awaitListeners(t, db, 2)
	terminate(t, db, FeedApplicationName, "%")
	cut := time.Now()
	for b.feed.Fresh(time.Now()) && time.Since(cut) < 5*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	stale := time.Since(cut)
	if b.feed.Fresh(time.Now()) {
		t.Fatal("feed still fresh 5 s after losing the database (bound 1 s)")
	}
	t.Logf("not fresh %v after the cut", stale.Round(time.Millisecond))
	time.Sleep(time.Second) // unreachable for a while
	if b.feed.Fresh(time.Now()) {
		t.Error("feed fresh while the database refuses connections")
	}
	allow()
	back := time.Now()
	for !b.feed.Fresh(time.Now()) && time.Since(back) < 10*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	if !b.feed.Fresh(time.Now()) {
		t.Fatal("feed not fresh 10 s after the database came back")
	}
	t.Logf("fresh again %v after the database came back", time.Since(back).Round(time.Millisecond))
	if r.Count("b/meanwhile") == 0 {
		t.Error("fresh again without the change committed while it was away")
	}
}

// PruneChanges drops rows older than ChangeRetention and keeps the rest.
func TestPruneChanges(t *testing.T) {
	_, pool := migrated(t)
	if _, err := pool.Exec(bg, "INSERT INTO hearth.changes (bucket, key, at) VALUES ('b', 'old', now() - interval '25 hours'), ('b', 'new', now())"); err != nil {
		t.Fatal(err)
	}
	n, err := PruneChanges(bg, pool)
	if err != nil || n != 1 {
		t.Fatalf("PruneChanges = %d, %v; want 1 row", n, err)
	}
	var left string
	if err := pool.QueryRow(bg, "SELECT string_agg(convert_from(key, 'UTF8'), ',') FROM hearth.changes").Scan(&left); err != nil || left != "new" {
		t.Errorf("rows left: %q, %v; want new", left, err)
	}
}

// A store prunes at Open (and every PruneEvery).
func TestStorePrunes(t *testing.T) {
	db, pool := migrated(t)
	if _, err := pool.Exec(bg, "INSERT INTO hearth.changes (bucket, key, at) VALUES ('b', 'old', now() - interval '25 hours')"); err != nil {
		t.Fatal(err)
	}
	open(t, db, Options{PruneEvery: 50 * time.Millisecond})
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := pool.QueryRow(bg, "SELECT count(*) FROM hearth.changes").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("old change rows still there 10 s after Open")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A feed that has not read for longer than maxGap (its clock jumps) may
// have missed pruned changes, so it delivers a Resync again.
func TestFeedResyncsAfterLongGap(t *testing.T) {
	_, pool := migrated(t)
	var mu sync.Mutex
	offset := time.Duration(0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	f := newFeed(pool, FeedConfig{Now: now})
	if err := f.start(bg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.run(ctx) }()
	resyncs := make(chan struct{}, 10)
	go func() {
		defer wg.Done()
		f.Subscribe(ctx, func(batch []store.Change) {
			if len(batch) == 1 && batch[0].Resync {
				resyncs <- struct{}{}
			}
		})
	}()
	defer func() { cancel(); wg.Wait() }()
	wait := func(what string) {
		t.Helper()
		select {
		case <-resyncs:
		case <-time.After(10 * time.Second):
			t.Fatalf("no Resync %s", what)
		}
	}
	wait("on subscribing")
	mu.Lock()
	offset = 2 * maxGap
	mu.Unlock()
	wait("after a gap longer than maxGap")
}

// awaitListeners waits until n feed connections listen on db (Open starts
// them in the background).
func awaitListeners(t *testing.T, db *pgtest.DB, n int) {
	t.Helper()
	admin := db.Admin(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got int
		if err := admin.QueryRow(bg, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2 AND state = 'idle'",
			FeedApplicationName, db.Name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d feed connections listen after 10 s, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Commits reach the other replica through the notification, not only the
// heartbeat: with a 5 s heartbeat, three commits in a row are each
// delivered within 1 s (a heartbeat could cover at most one of them) —
// with the NOTIFY in the Update (a lone Update's) and from the notifier
// after the commit (when others commit at the same time).
func TestFeedNotifies(t *testing.T) {
	t.Run("in-tx", func(t *testing.T) { testNotifies(t, notifyAdaptive) })
	t.Run("after", func(t *testing.T) { testNotifies(t, notifyAfter) })
}

func testNotifies(t *testing.T, mode notifyMode) {
	db := pgtest.New(t)
	opts := Options{FeedBound: 20 * time.Second, notify: mode} // heartbeat 5 s
	a, b := open(t, db, opts), open(t, db, opts)
	if err := a.Declare(bg, "b"); err != nil {
		t.Fatal(err)
	}
	r := subscribe(t, b)
	awaitListeners(t, db, 2)
	for i := range 3 {
		k := "n" + string(rune('0'+i))
		put(t, a, "b", k, "v")
		committed := time.Now()
		r.Await(t, "b/"+k, time.Second)
		t.Logf("%s delivered %v after commit", k, time.Since(committed).Round(time.Millisecond))
	}
}

// Close ends every subscription: Subscribe returns.
func TestCloseEndsSubscriptions(t *testing.T) {
	s := open(t, pgtest.New(t), Options{})
	done := make(chan error, 1)
	go func() { done <- s.Feed().Subscribe(bg, func([]store.Change) {}) }()
	time.Sleep(50 * time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Subscribe = %v after Close, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe still running 10 s after Close")
	}
}
