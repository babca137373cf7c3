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

// Channel is the LISTEN/NOTIFY channel of the invalidation feed.
const Channel = "hearth_changes"

// FeedApplicationName is the application_name of the feed's listening
// connection (so an operator, or a test, can find it in pg_stat_activity).
const FeedApplicationName = "hearth-feed"

// Publish records c in the transaction tx and notifies the listeners when
// tx commits (NOTIFY is transactional: nothing is sent if it rolls back).
func Publish(ctx context.Context, tx pgx.Tx, c store.Change) error {
	hashes := make([][]byte, len(c.Hashes))
	for i := range c.Hashes {
		hashes[i] = c.Hashes[i][:]
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+Schema+".changes (kind, key, hashes) VALUES ($1, $2, $3)",
		string(c.Kind), c.Key, hashes); err != nil {
		return fmt.Errorf("pgstore: recording a change: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, '')", Channel); err != nil {
		return fmt.Errorf("pgstore: notifying a change: %w", err)
	}
	return nil
}

// FeedConfig configures a Feed. The zero value works.
type FeedConfig struct {
	// Bound is how old the last successful sync may be before Fresh says
	// no; 0 means one second.
	Bound time.Duration
	// Heartbeat is how often the feed polls when no notification comes;
	// 0 means Bound/4. Every poll is a resync: notifications only make
	// delivery sooner.
	Heartbeat time.Duration
	// Logger receives reconnects; the zero logger discards.
	Logger zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Feed is store.Feed on PostgreSQL: a dedicated listening connection, and
// after every notification, heartbeat and reconnect a read of the changes
// table from a cursor over transaction ids.
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

	lastSync atomic.Int64 // unix nanoseconds of the last successful read

	mu     sync.Mutex
	cursor uint64           // xid8
	seen   map[int64]uint64 // delivered change ids with xid >= cursor → xid
	synced bool             // a first read has set the cursor
}

var _ store.Feed = (*Feed)(nil)

// NewFeed returns a feed reading pool's database.
func NewFeed(pool *pgxpool.Pool, cfg FeedConfig) *Feed {
	if cfg.Bound <= 0 {
		cfg.Bound = time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = cfg.Bound / 4
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Feed{pool: pool, cfg: cfg, seen: map[int64]uint64{}}
}

// Fresh implements store.Feed: true when the last successful read started
// at most Bound before now, so that every change committed before
// now - Bound has been delivered.
func (f *Feed) Fresh(now time.Time) bool {
	last := f.lastSync.Load()
	return last != 0 && now.UnixNano()-last <= int64(f.cfg.Bound)
}

// Subscribe implements store.Feed. It first delivers one ChangeResync (the
// caller loads its caches after the feed has fixed its cursor, so nothing
// committed in between is lost), then every change committed since, until
// ctx ends; it returns ctx's error.
func (f *Feed) Subscribe(ctx context.Context, fn func(store.Change)) error {
	l := listener{pool: f.pool, appName: FeedApplicationName, channel: Channel, heartbeat: f.cfg.Heartbeat, dial: f.cfg.Bound}
	l.run(ctx, func(ctx context.Context, conn *pgx.Conn) error { return f.read(ctx, conn, fn) }, func(err error) {
		f.cfg.Logger.Warn().Err(err).Msg("pgstore: invalidation feed lost its connection; reconnecting")
	})
	return ctx.Err()
}

// read delivers the changes committed since the cursor and moves it.
func (f *Feed) read(ctx context.Context, conn *pgx.Conn, fn func(store.Change)) error {
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
	rows, err := conn.Query(rctx, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, c.id, c.xid::text, c.kind, c.key, c.hashes"+
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
			kind   *string
			key    *string
			hashes [][]byte
		)
		if err := rows.Scan(&xminText, &id, &xidTxt, &kind, &key, &hashes); err != nil {
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
		c := store.Change{Kind: store.ChangeKind(*kind), Key: *key}
		for _, h := range hashes {
			if len(h) == len(store.TokenHash{}) {
				c.Hashes = append(c.Hashes, store.TokenHash(h))
			}
		}
		got = append(got, row{*id, xid, c})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	xmin, err := strconv.ParseUint(xminText, 10, 64)
	if err != nil {
		return fmt.Errorf("pgstore: bad snapshot xmin %q", xminText)
	}
	if !f.synced {
		f.synced = true
		fn(store.Change{Kind: store.ChangeResync})
	} else if gap := started.UnixNano() - f.lastSync.Load(); gap > int64(maxGap) {
		// Long enough away that the changes table may have been pruned
		// past the cursor: start over.
		fn(store.Change{Kind: store.ChangeResync})
	}
	for _, r := range got {
		if _, dup := f.seen[r.id]; dup {
			continue
		}
		f.seen[r.id] = r.xid
		fn(r.c)
	}
	f.cursor = xmin
	for id, xid := range f.seen {
		if xid < xmin {
			delete(f.seen, id)
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
