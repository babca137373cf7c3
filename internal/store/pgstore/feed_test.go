package pgstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
)

// replica is one feed subscription, collecting what it hears.
type replica struct {
	feed *Feed
	mu   sync.Mutex
	got  map[string]int // bucket/key → times delivered
	seen chan struct{}
}

func subscribe(t *testing.T, s *Store) *replica {
	t.Helper()
	r := &replica{feed: s.feed, got: map[string]int{}, seen: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.feed.Subscribe(ctx, func(batch []store.Change) {
			r.mu.Lock()
			for _, c := range batch {
				k := c.Bucket + "/" + string(c.Key)
				if c.Resync {
					k = "resync"
				}
				r.got[k]++
			}
			r.mu.Unlock()
			select {
			case r.seen <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	r.await(t, "resync", 5*time.Second)
	return r
}

func (r *replica) count(k string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[k]
}

func (r *replica) await(t *testing.T, k string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for r.count(k) == 0 {
		select {
		case <-r.seen:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s not delivered within %s", k, within)
		}
	}
}

// awaitBounded checks the feed's promise for the change k committed at
// committed: from committed + Bound on, the feed either has delivered it
// or says it is not fresh — never fresh and ignorant; delivery within 10 s.
func (r *replica) awaitBounded(t *testing.T, k string, committed time.Time) {
	t.Helper()
	bound := r.feed.cfg.Bound
	for {
		now := time.Now()
		fresh := r.feed.Fresh(now) // before count: see Feed.Fresh
		if r.count(k) > 0 {
			t.Logf("%s delivered %v after commit", k, time.Since(committed).Round(time.Millisecond))
			return
		}
		if now.Sub(committed) >= bound && fresh {
			t.Fatalf("%s: %v after commit the feed says it is fresh (bound %v) but has not delivered it", k, now.Sub(committed), bound)
		}
		if now.Sub(committed) > 10*time.Second {
			t.Fatalf("%s not delivered within 10 s", k)
		}
		select {
		case <-r.seen:
		case <-time.After(10 * time.Millisecond):
		}
	}
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
	if r.count("b/meanwhile") == 0 {
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
