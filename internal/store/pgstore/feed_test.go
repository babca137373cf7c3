package pgstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
)

// replica is one replica's feed subscription, collecting what it hears.
type replica struct {
	feed *Feed
	mu   sync.Mutex
	got  map[string]int // Kind/Key → times delivered
	seen chan string
}

func migrated(t *testing.T) (*pgtest.DB, *pgxpool.Pool) {
	t.Helper()
	db := pgtest.New(t)
	pool := db.Pool(t)
	if _, err := Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return db, pool
}

func subscribe(t *testing.T, db *pgtest.DB) *replica {
	t.Helper()
	r := &replica{feed: NewFeed(db.Pool(t), FeedConfig{}), got: map[string]int{}, seen: make(chan string, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.feed.Subscribe(ctx, func(c store.Change) {
			k := string(c.Kind) + "/" + c.Key
			r.mu.Lock()
			r.got[k]++
			r.mu.Unlock()
			select {
			case r.seen <- k:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	r.await(t, "resync/", 5*time.Second) // subscribed and cursor fixed
	return r
}

func (r *replica) delivered(k string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[k] > 0
}

// await waits for the change named k (Kind/Key) to have been delivered.
func (r *replica) await(t *testing.T, k string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for !r.delivered(k) {
		select {
		case <-r.seen:
		case <-deadline:
			t.Fatalf("change %s not delivered within %s", k, within)
		}
	}
}

// awaitBounded checks the feed's promise for the change k committed before
// committed: from committed + Bound on, the feed either has delivered it or
// says it is not fresh (so its caches are not trusted) — never fresh and
// ignorant. It also requires delivery within 10 s and logs the latency,
// which on an idle machine is well under the 1 s bound.
func (r *replica) awaitBounded(t *testing.T, k string, committed time.Time) {
	t.Helper()
	bound := r.feed.cfg.Bound
	for {
		now := time.Now()
		fresh := r.feed.Fresh(now) // before delivered: see Feed.Fresh
		if r.delivered(k) {
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

func publish(t *testing.T, pool *pgxpool.Pool, c store.Change) {
	t.Helper()
	ctx := context.Background()
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return Publish(ctx, tx, c) }); err != nil {
		t.Fatal(err)
	}
}

// A change committed through one replica's pool reaches another replica's
// feed, which never claims freshness (1 s bound) without it; one rolled
// back is never delivered.
func TestFeedDeliversCommittedChanges(t *testing.T) {
	db, pool := migrated(t)
	b := subscribe(t, db)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := Publish(ctx, tx, store.Change{Kind: store.ChangeUser, Key: "rolled-back"}); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	publish(t, pool, store.Change{Kind: store.ChangeTokens, Key: "alice", Hashes: []store.TokenHash{{1, 2, 3}}})
	b.awaitBounded(t, "tokens/alice", time.Now())
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.got["user/rolled-back"] != 0 {
		t.Errorf("a rolled-back change was delivered")
	}
}

// Two transactions commit in the opposite order to their change ids. A
// reader keeping the highest id seen would skip the earlier id once the
// later one was delivered; the transaction-id cursor delivers both.
func TestFeedOutOfOrderCommit(t *testing.T) {
	db, pool := migrated(t)
	b := subscribe(t, db)
	ctx := context.Background()
	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx)
	if err := Publish(ctx, slow, store.Change{Kind: store.ChangeDevice, Key: "slow"}); err != nil {
		t.Fatal(err)
	}
	publish(t, pool, store.Change{Kind: store.ChangeDevice, Key: "fast"})
	b.awaitBounded(t, "device/fast", time.Now())
	// Let a few heartbeats pass with the slow transaction still open.
	time.Sleep(3 * b.feed.cfg.Heartbeat)
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b.awaitBounded(t, "device/slow", time.Now())
	var fastID, slowID int64
	pool.QueryRow(ctx, "SELECT id FROM hearth.changes WHERE key = 'fast'").Scan(&fastID)
	pool.QueryRow(ctx, "SELECT id FROM hearth.changes WHERE key = 'slow'").Scan(&slowID)
	if slowID >= fastID {
		t.Fatalf("test setup: slow id %d not below fast id %d", slowID, fastID)
	}
}

// The listening connection is killed (pg_terminate_backend) and a change is
// committed while it is down: the notification is lost, and the change is
// still delivered, by the resync after reconnecting, with the feed never
// claiming freshness without it.
func TestFeedListenerKilled(t *testing.T) {
	db, pool := migrated(t)
	b := subscribe(t, db)
	ctx := context.Background()
	admin := db.Admin(t)
	var killed int
	if err := admin.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
		FeedApplicationName, db.Name).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d listening connections, want 1", killed)
	}
	publish(t, pool, store.Change{Kind: store.ChangeUser, Key: "while-down"})
	b.awaitBounded(t, "user/while-down", time.Now())
}

// A replica that cannot read the feed (its reads block behind a lock)
// stops being fresh within the bound and is fresh again once it can.
func TestFeedFreshness(t *testing.T) {
	db, pool := migrated(t)
	b := subscribe(t, db)
	ctx := context.Background()
	if !b.feed.Fresh(time.Now()) {
		t.Fatal("a running feed is not fresh")
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE hearth.changes IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for b.feed.Fresh(time.Now()) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	stale := !b.feed.Fresh(time.Now())
	tx.Rollback(ctx)
	if !stale {
		t.Fatal("feed still fresh 3 s after its reads were blocked (bound 1 s)")
	}
	deadline = time.Now().Add(10 * time.Second)
	for !b.feed.Fresh(time.Now()) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !b.feed.Fresh(time.Now()) {
		t.Error("feed not fresh again 10 s after the lock was released")
	}
}

// PruneChanges drops rows older than ChangeRetention and keeps the rest.
func TestPruneChanges(t *testing.T) {
	_, pool := migrated(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "INSERT INTO hearth.changes (kind, key, at) VALUES ('user', 'old', now() - interval '25 hours'), ('user', 'new', now())"); err != nil {
		t.Fatal(err)
	}
	n, err := PruneChanges(ctx, pool)
	if err != nil || n != 1 {
		t.Fatalf("PruneChanges = %d, %v; want 1 row", n, err)
	}
	var left string
	if err := pool.QueryRow(ctx, "SELECT string_agg(key, ',') FROM hearth.changes").Scan(&left); err != nil || left != "new" {
		t.Errorf("rows left: %q, %v; want new", left, err)
	}
}

// A feed that has not read for longer than maxGap (its clock jumps) may
// have missed pruned changes, so it delivers ChangeResync again.
func TestFeedResyncsAfterLongGap(t *testing.T) {
	db, _ := migrated(t)
	var mu sync.Mutex
	offset := time.Duration(0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	f := NewFeed(db.Pool(t), FeedConfig{Now: now})
	resyncs := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Subscribe(ctx, func(c store.Change) {
			if c.Kind == store.ChangeResync {
				resyncs <- struct{}{}
			}
		})
	}()
	defer func() { cancel(); <-done }()
	wait := func(what string) {
		t.Helper()
		select {
		case <-resyncs:
		case <-time.After(10 * time.Second):
			t.Fatalf("no ChangeResync %s", what)
		}
	}
	wait("at start")
	mu.Lock()
	offset = 2 * maxGap
	mu.Unlock()
	wait("after a gap longer than maxGap")
}
