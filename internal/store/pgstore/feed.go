package pgstore

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/hearth-home/hearth/internal/store"
)

// Channel is the LISTEN/NOTIFY channel of the feed.
const Channel = "hearth_changes"

// FeedApplicationName is the application_name of the feed's listening
// connection (so an operator, or a test, can find it in pg_stat_activity).
const FeedApplicationName = "hearth-feed"

// FeedConfig configures a Feed. The zero value works.
type FeedConfig struct {
	// Bound is how old the last successful read may be before Fresh says
	// no; 0 means one second.
	Bound time.Duration
	// Heartbeat is how often the feed reads when no notification comes;
	// 0 means Bound/4. Every read is a resync from the cursor:
	// notifications only make delivery sooner.
	Heartbeat time.Duration
	// Logger receives reconnects; the zero logger discards.
	Logger zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Feed is store.Feed on PostgreSQL: one dedicated listening connection per
// Store, and after every notification, heartbeat and reconnect a read of
// the changes table from a cursor over transaction ids, delivered as one
// batch to every subscriber.
//
// Why a transaction-id cursor: change rows get their id from a sequence
// when inserted, not when committed, so a row with a smaller id can become
// visible after one with a larger id; a reader that remembers the largest
// id it has seen skips it for good. Each row records its transaction's id
// (xid8), and the feed's cursor is pg_snapshot_xmin of the snapshot it last
// read with: every transaction that had not committed by then has an id
// at or above it, so reading rows with xid >= cursor can return a row
// twice (it is then dropped by id) but never miss one.
type Feed struct {
	pool *pgxpool.Pool
	cfg  FeedConfig

	lastSync atomic.Int64 // unix nanoseconds of the start of the last successful read
	closed   chan struct{}
	closeIt  sync.Once

	mu     sync.Mutex // serialises reads and deliveries
	cursor uint64     // xid8
	seen   map[int64]uint64
	synced bool
	subs   map[int]func([]store.Change)
	nextID int
}

var _ store.Feed = (*Feed)(nil)

func newFeed(pool *pgxpool.Pool, cfg FeedConfig) *Feed {
	if cfg.Bound <= 0 {
		cfg.Bound = time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = cfg.Bound / 4
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Feed{pool: pool, cfg: cfg, seen: map[int64]uint64{}, subs: map[int]func([]store.Change){}, closed: make(chan struct{})}
}

// start fixes the cursor with a first read, so that a subscriber that
// loads its caches after Subscribe misses nothing committed after that.
func (f *Feed) start(ctx context.Context) error {
	conn, err := f.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: starting the feed: %w", err)
	}
	defer conn.Release()
	if err := f.read(ctx, conn.Conn()); err != nil {
		return fmt.Errorf("pgstore: starting the feed: %w", err)
	}
	return nil
}

// run keeps the listening connection until ctx ends.
func (f *Feed) run(ctx context.Context) {
	l := listener{pool: f.pool, appName: FeedApplicationName, channel: Channel, heartbeat: f.cfg.Heartbeat, dial: f.cfg.Bound}
	l.run(ctx, f.read, func(err error) {
		f.cfg.Logger.Warn().Err(err).Msg("pgstore: the feed lost its connection; reconnecting")
	})
}

func (f *Feed) close() { f.closeIt.Do(func() { close(f.closed) }) }

// Fresh implements store.Feed: true when the last successful read started
// at most Bound before now, so that every change committed before
// now - Bound has been delivered.
func (f *Feed) Fresh(now time.Time) bool {
	last := f.lastSync.Load()
	return last != 0 && now.UnixNano()-last <= int64(f.cfg.Bound)
}

// Subscribe implements store.Feed. fn first gets one Resync batch (the
// subscriber loads its caches then: the feed's cursor is already fixed, so
// whatever commits after that load is delivered later), then every batch
// the feed reads, until ctx ends or the store is closed. It returns nil.
func (f *Feed) Subscribe(ctx context.Context, fn func([]store.Change)) error {
	f.mu.Lock()
	fn([]store.Change{{Resync: true}})
	id := f.nextID
	f.nextID++
	f.subs[id] = fn
	f.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-f.closed:
	}
	f.mu.Lock()
	delete(f.subs, id)
	f.mu.Unlock()
	return nil
}

// read delivers the changes committed since the cursor and moves it.
func (f *Feed) read(ctx context.Context, conn *pgx.Conn) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Freshness is measured from before the read: its snapshot is taken
	// after this instant, so once the read succeeds every change committed
	// before it has been delivered.
	started := f.cfg.Now()
	rctx, cancel := context.WithTimeout(ctx, f.cfg.Bound)
	defer cancel()
	// One statement, one snapshot: the rows it returns are those committed
	// before pg_current_snapshot(), whose xmin becomes the next cursor.
	// The first read (synced false) only fixes the cursor.
	rows, err := conn.Query(rctx, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, c.id, c.xid::text, c.bucket, c.key"+
		" FROM (SELECT 1) AS one LEFT JOIN "+Schema+".changes c ON $2 AND c.xid >= $1::text::xid8 ORDER BY c.id",
		strconv.FormatUint(f.cursor, 10), f.synced)
	if err != nil {
		return err
	}
	type row struct {
		id  int64
		xid uint64
		c   store.Change
	}
	var got []row
	var xminText string
	for rows.Next() {
		var (
			id     *int64
			xidTxt *string
			bucket *string
			key    []byte
		)
		if err := rows.Scan(&xminText, &id, &xidTxt, &bucket, &key); err != nil {
			rows.Close()
			return err
		}
		if id == nil {
			continue // the LEFT JOIN's row when no change matched
		}
		xid, err := strconv.ParseUint(*xidTxt, 10, 64)
		if err != nil {
			rows.Close()
			return fmt.Errorf("pgstore: change %d: bad xid %q", *id, *xidTxt)
		}
		got = append(got, row{*id, xid, store.Change{Bucket: *bucket, Key: key}})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	xmin, err := strconv.ParseUint(xminText, 10, 64)
	if err != nil {
		return fmt.Errorf("pgstore: bad snapshot xmin %q", xminText)
	}
	var batch []store.Change
	if f.synced && started.UnixNano()-f.lastSync.Load() > int64(maxGap) {
		// Long enough away that the changes table may have been pruned
		// past the cursor: every cache starts over.
		batch = []store.Change{{Resync: true}}
	} else {
		for _, r := range got {
			if _, dup := f.seen[r.id]; dup {
				continue
			}
			f.seen[r.id] = r.xid
			batch = append(batch, r.c)
		}
	}
	f.synced = true
	f.cursor = xmin
	for id, xid := range f.seen {
		if xid < xmin {
			delete(f.seen, id)
		}
	}
	if len(batch) > 0 {
		for _, fn := range f.subs {
			fn(batch)
		}
	}
	f.lastSync.Store(started.UnixNano())
	return nil
}

// maxGap is how long a feed may go without a read before it resyncs
// everything rather than trusting the changes table to reach back to its
// cursor. Changes are kept (see PruneChanges) far longer than this.
const maxGap = time.Hour

// ChangeRetention is how long PruneChanges keeps change rows.
const ChangeRetention = 24 * time.Hour

// PruneChanges deletes change rows older than ChangeRetention.
func PruneChanges(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	tag, err := pool.Exec(ctx, "DELETE FROM "+Schema+".changes WHERE at < now() - $1::interval",
		fmt.Sprintf("%d seconds", int64(ChangeRetention/time.Second)))
	if err != nil {
		return 0, fmt.Errorf("pgstore: pruning changes: %w", err)
	}
	return tag.RowsAffected(), nil
}
