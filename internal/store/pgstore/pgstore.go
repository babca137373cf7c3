// Package pgstore is the PostgreSQL driver of internal/store: hearth's
// buckets of records as rows of one table (hearth.kv: bucket, key, value),
// every Update a SERIALIZABLE transaction retried on serialization
// failures, and a Feed of the changes every replica commits.
//
// # Why SERIALIZABLE, and what it costs
//
// Every cross-replica invariant of hearth is a read-check-write that auth
// and ca do inside one Update: an enrollment token is used once, a refresh
// token is consumed once and its reuse revokes the family (RFC 9700
// §4.14.2), a recovery or reset code is spent once, a TOTP step is accepted
// once (RFC 6238 §5.2), a failed login is charged before the password is
// checked (NIST SP 800-63B-4 §3.2.2). PostgreSQL's SERIALIZABLE isolation
// guarantees that the result of concurrent serializable transactions equals
// some serial order of them (PostgreSQL 15 manual §13.2.3); a transaction
// that would break that fails with 40001 (or 40P01 on a deadlock), and
// Update runs fn again from scratch, with jittered exponential backoff, at
// most Options.MaxAttempts times. So the code written for bbolt's single
// writer is correct across replicas, and storetest races it on both.
//
// An Update costs its reads plus one round trip: records read are cached in
// the transaction; Puts and Deletes are buffered (Get and ForEach see them)
// and sent with their change rows in one pipelined batch. Without
// BeforeCommit hooks that batch ends with COMMIT; with hooks it is sent
// first (so a serialization failure it meets is still retried, no hook
// having run), then the hooks run, then COMMIT. BEGIN travels with the
// transaction's first statement.
//
// The feed's NOTIFY: PostgreSQL serialises the commits of notifying
// transactions on one lock held through the commit's WAL flush, which
// defeats group commit when every Update notifies (fsync on, 16 writers:
// about a third of the throughput of notifying after the commit), while a
// separate notification after each commit costs a lone writer about twice
// its latency (see the note of issue 12 for the figures). So an Update that
// starts committing while no other Update of this replica is committing
// carries its NOTIFY; the others leave it to a notifier goroutine that
// sends one after their commit, gathering the commits of 10 ms, in a
// transaction that does not wait for its own flush. A notification lost
// (the process dies first) only delays delivery to the listeners' next
// heartbeat read (Bound/4). A View is REPEATABLE READ READ ONLY: one
// consistent snapshot of committed data, which is all a read needs; the
// decisions that must be serializable are made in Updates (a read-only
// SERIALIZABLE DEFERRABLE View would wait for a safe snapshot for no
// invariant of hearth's).
//
// hearth's tables live in schema [Schema]; smallstep's CA tables in
// internal/pgnosql's schema (hearth_ca), in the same database.
package pgstore

import (
	"context"
	"embed"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/hearth-home/hearth/internal/pgmigrate"
	"github.com/hearth-home/hearth/internal/store"
)

// Schema is the PostgreSQL schema of hearth's own tables.
const Schema = "hearth"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations returns hearth's schema migrations, in order.
func Migrations() ([]pgmigrate.Migration, error) {
	return pgmigrate.Load(migrationFiles, "migrations")
}

// Migrate brings hearth's schema up to date, safely when several replicas
// start at once (see internal/pgmigrate), and returns the versions it
// applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]int64, error) {
	migs, err := Migrations()
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	done, err := pgmigrate.Run(ctx, pool, Schema, migs)
	if err != nil {
		return done, fmt.Errorf("pgstore: %w", err)
	}
	return done, nil
}

// DefaultMaxConns is the pool size when neither Options nor the DSN sets
// one: two replicas stay far below PostgreSQL's default max_connections
// (100).
const DefaultMaxConns = 16

// Options configure a Store. The zero value works.
type Options struct {
	// Logger receives the feed's reconnects and pruning failures; the zero
	// logger discards.
	Logger zerolog.Logger
	// ApplicationName is the application_name of the store's connections
	// (pg_stat_activity); "" means "hearth".
	ApplicationName string
	// MaxConns bounds the connection pool; 0 means pool_max_conns from
	// the DSN if it names one, else DefaultMaxConns. The store, the CA's
	// database and the audit log's inserts share the pool; the feed, the
	// audit sequencer and its waiter have connections of their own.
	MaxConns int32
	// MaxAttempts bounds how often Update runs fn when PostgreSQL reports
	// a serialization failure or a deadlock; 0 means 30.
	MaxAttempts int
	// FeedBound is the feed's freshness bound; 0 means one second.
	FeedBound time.Duration
	// PruneEvery is how often the store deletes change rows older than
	// ChangeRetention; 0 means hourly.
	PruneEvery time.Duration

	// notify overrides how Updates notify the feed (for the benchmark
	// that compares the ways).
	notify notifyMode
}

type notifyMode int

const (
	notifyAdaptive notifyMode = iota // in the transaction when alone, else after it
	notifyInTx                       // always in the transaction
	notifyAfter                      // always after the commit
)

// Store is store.Store on PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
	opts Options
	feed *Feed

	declared sync.Map // bucket name → struct{}: buckets are never removed
	retries  atomic.Int64
	// committing counts the Updates between sending their writes and
	// ending; an Update that starts committing alone notifies in its own
	// transaction.
	committing atomic.Int32
	notify     chan struct{} // a commit wants a notification sent

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

var _ store.Store = (*Store)(nil)

// Open checks dsn (CheckDSN: no password in it), connects a pool, brings
// hearth's schema up to date (under pgmigrate's advisory lock, so replicas
// may start at once on an empty database), fixes the feed's cursor and
// starts the feed and the periodic pruning of old change rows; Close stops
// them.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	if err := CheckDSN(dsn); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: store DSN: %w", err)
	}
	if opts.ApplicationName == "" {
		opts.ApplicationName = "hearth"
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 30
	}
	if opts.PruneEvery <= 0 {
		opts.PruneEvery = time.Hour
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = opts.ApplicationName
	keepAlive(cfg.ConnConfig)
	switch {
	case opts.MaxConns > 0:
		cfg.MaxConns = opts.MaxConns
	case !strings.Contains(dsn, "pool_max_conns"):
		// pgxpool's default (max(4, CPUs)) is 4 on a small box, which
		// queues a busy gateway's audit inserts behind store reads.
		cfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if _, err := Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	s := &Store{pool: pool, opts: opts, notify: make(chan struct{}, 1)}
	s.feed = newFeed(pool, FeedConfig{Bound: opts.FeedBound, Logger: opts.Logger})
	if err := s.feed.start(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.feed.run(bg) }()
	go func() { defer s.wg.Done(); s.prune(bg) }()
	go func() { defer s.wg.Done(); s.notifier(bg) }()
	return s, nil
}

// notifySoon asks the notifier for one more notification.
func (s *Store) notifySoon() {
	select {
	case s.notify <- struct{}{}:
	default: // one is pending already: it covers this commit too
	}
}

// notifyGather is how long the notifier waits after a commit for more:
// one notification per gather covers them all. Each notification is a
// small commit of its own, which (measured) slows the next synchronous
// commit; gathering bounds that to 1/notifyGather per replica.
const notifyGather = 10 * time.Millisecond

// notifier sends the feed's notification after commits, one at a time:
// commits made while one is on its way are covered by the next. A lost
// notification (the process dies first) only delays delivery to the
// listeners' next heartbeat read.
func (s *Store) notifier(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.notify:
		}
		// Gather the commits of the next moment into this notification.
		select {
		case <-ctx.Done():
			return
		case <-time.After(notifyGather):
		}
		select {
		case <-s.notify:
		default:
		}
		if _, err := s.pool.Exec(ctx, sqlNotify); err != nil && ctx.Err() == nil {
			s.opts.Logger.Debug().Err(err).Msg("pgstore: notifying the feed failed; listeners catch up at their next heartbeat")
		}
	}
}

// prune deletes old change rows now and every PruneEvery until ctx ends.
// Every replica does it; the deletes are idempotent.
func (s *Store) prune(ctx context.Context) {
	t := time.NewTicker(s.opts.PruneEvery)
	defer t.Stop()
	for {
		if _, err := PruneChanges(ctx, s.pool); err != nil && ctx.Err() == nil {
			s.opts.Logger.Warn().Err(err).Msg("pgstore: pruning old changes failed; retrying later")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pool returns the store's connection pool, for the parts of hearth that
// share the database (internal/pgnosql, internal/pgaudit).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Retries returns how often Update has run fn again after a
// serialization failure or a deadlock since Open (for metrics and
// benchmarks).
func (s *Store) Retries() int64 { return s.retries.Load() }

// Driver implements store.Store.
func (s *Store) Driver() string { return "postgres" }

// Feed implements store.Store.
func (s *Store) Feed() store.Feed { return s.feed }

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return nil
}

// Close implements store.Store: it stops the feed and the pruning and
// closes the pool.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.feed.close()
		s.wg.Wait()
		s.pool.Close()
	})
	return nil
}

// Declare implements store.Store.
func (s *Store) Declare(ctx context.Context, buckets ...string) error {
	for _, b := range buckets {
		if err := checkBucketName(b); err != nil {
			return err
		}
	}
	if _, err := s.pool.Exec(ctx, "INSERT INTO "+Schema+".buckets (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", buckets); err != nil {
		return fmt.Errorf("%w: declaring buckets: %w", store.ErrUnavailable, err)
	}
	for _, b := range buckets {
		s.declared.Store(b, struct{}{})
	}
	return nil
}

// checkBucketName refuses names the buckets table cannot hold (text has
// no NUL bytes and must be UTF-8) or that are not names at all.
func checkBucketName(b string) error {
	if b == "" || len(b) > 255 || !utf8.ValidString(b) || strings.ContainsRune(b, 0) {
		return fmt.Errorf("pgstore: bad bucket name %q (1-255 bytes of UTF-8 without NUL)", b)
	}
	return nil
}

// Keepalive timing for every connection of the store, and of the feed's,
// the audit sequencer's and its waiter's connections, which copy the
// pool's configuration. Without it a replica that vanishes without closing
// its connections (power cut, cable pulled) keeps its backends — and the
// audit sequencer's advisory lock with them — until the kernel's default
// keepalive gives up, about two hours later. With it the server drops such
// a backend within idle + interval × count = 25 s, so a standby takes the
// lock, and the replica notices a vanished server as fast.
const (
	keepAliveIdle     = 10 * time.Second
	keepAliveInterval = 5 * time.Second
	keepAliveCount    = 3
)

// keepAlive sets the server's TCP keepalives for the session
// (tcp_keepalives_* are settable per session: PostgreSQL 15 manual §20.3.1)
// unless the DSN set them, and the client side's on the dialer.
func keepAlive(cc *pgx.ConnConfig) {
	for k, v := range map[string]string{
		"tcp_keepalives_idle":     strconv.Itoa(int(keepAliveIdle / time.Second)),
		"tcp_keepalives_interval": strconv.Itoa(int(keepAliveInterval / time.Second)),
		"tcp_keepalives_count":    strconv.Itoa(keepAliveCount),
	} {
		if _, set := cc.RuntimeParams[k]; !set {
			cc.RuntimeParams[k] = v
		}
	}
	d := &net.Dialer{
		Timeout: cc.ConnectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount,
		},
	}
	cc.DialFunc = d.DialContext
}
