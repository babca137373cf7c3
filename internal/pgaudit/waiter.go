package pgaudit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
)

// waiter wakes a replica's Records when a checkpoint covers their entries,
// with one listening connection for all of them: on every checkpoint
// notification, every heartbeat and every reconnect (a notification sent
// while no connection listened is lost) it reads the tree size and, if it
// grew and Records wait, which entries the new batches hold — one query
// per batch, not per Record.
type waiter struct {
	pool      *pgxpool.Pool
	heartbeat time.Duration
	log       zerolog.Logger

	mu        sync.Mutex
	processed int64 // tree size whose entries have been dispatched
	waiting   map[int64]*request
	cancel    context.CancelFunc
	done      chan struct{}
}

func newWaiter(ctx context.Context, pool *pgxpool.Pool, heartbeat time.Duration, lg zerolog.Logger) (*waiter, error) {
	w := &waiter{pool: pool, heartbeat: heartbeat, log: lg, waiting: map[int64]*request{}, done: make(chan struct{})}
	// Entries sequenced before now are found by register's own check.
	if err := pool.QueryRow(ctx, "SELECT size FROM "+Schema+".state").Scan(&w.processed); err != nil {
		return nil, fmt.Errorf("pgaudit: waiter: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.run(rctx)
	return w, nil
}

func (w *waiter) close() { w.cancel(); <-w.done }

// snapshot is read before the entries are inserted and given to
// register: if processed has not moved in between, no dispatch has passed
// them by.
func (w *waiter) snapshot() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.processed
}

// register makes reqs (with their ids) wait. A dispatch wakes the
// registered entries and advances processed in one critical section; so
// if processed moved since p0 (p0 < 0: unknown), a dispatch may have
// passed the entries before they were registered: one query finds those.
func (w *waiter) register(ctx context.Context, reqs []*request, p0 int64) error {
	ids := make([]int64, len(reqs))
	w.mu.Lock()
	for i, r := range reqs {
		w.waiting[r.id] = r
		ids[i] = r.id
	}
	check := p0 < 0 || w.processed != p0
	w.mu.Unlock()
	if !check {
		return nil
	}
	rows, err := w.pool.Query(ctx, "SELECT id, seq FROM "+Schema+".entries WHERE id = ANY($1) AND seq IS NOT NULL", ids)
	if err != nil {
		return err
	}
	return w.wakeRows(rows)
}

func (w *waiter) wakeRows(rows pgx.Rows) error {
	defer rows.Close()
	var id, seq int64
	_, err := pgx.ForEachRow(rows, []any{&id, &seq}, func() error {
		w.mu.Lock()
		if r := w.waiting[id]; r != nil {
			delete(w.waiting, id)
			r.seq <- seq
		}
		w.mu.Unlock()
		return nil
	})
	return err
}

func (w *waiter) forget(id int64) {
	w.mu.Lock()
	delete(w.waiting, id)
	w.mu.Unlock()
}

func (w *waiter) run(ctx context.Context) {
	defer close(w.done)
	for ctx.Err() == nil {
		err := listen(ctx, w.pool, WaiterApplicationName, checkpointChannel, w.heartbeat, w.dispatch)
		if ctx.Err() != nil {
			return
		}
		w.log.Warn().Err(err).Msg("pgaudit: the audit waiter lost its connection; reconnecting")
		select {
		case <-ctx.Done():
		case <-time.After(w.heartbeat):
		}
	}
}

// dispatch wakes the Records of the entries sequenced since processed.
// An entry has a position only once a checkpoint covers it (the sequencer
// sets both in one transaction), so every entry at or past processed with
// a position is covered: one query finds them. Waking them and advancing
// processed is one critical section (see register).
func (w *waiter) dispatch(ctx context.Context, conn *pgx.Conn) error {
	w.mu.Lock()
	from, n := w.processed, len(w.waiting)
	w.mu.Unlock()
	if n == 0 {
		// Nobody waits: move on to the current size, unless someone
		// registered meanwhile (then the next dispatch reads the entries).
		var size int64
		if err := conn.QueryRow(ctx, "SELECT size FROM "+Schema+".state").Scan(&size); err != nil {
			return err
		}
		w.mu.Lock()
		if len(w.waiting) == 0 {
			w.processed = max(w.processed, size)
		}
		w.mu.Unlock()
		return nil
	}
	rows, err := conn.Query(ctx, "SELECT id, seq FROM "+Schema+".entries WHERE seq >= $1", from)
	if err != nil {
		return err
	}
	type pos struct{ id, seq int64 }
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pos, error) {
		var p pos
		return p, r.Scan(&p.id, &p.seq)
	})
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range got {
		if r := w.waiting[p.id]; r != nil {
			delete(w.waiting, p.id)
			r.seq <- p.seq
		}
		w.processed = max(w.processed, p.seq+1)
	}
	return nil
}

// listen keeps one connection LISTENing on channel and calls catch after
// connecting, after every notification and at least every heartbeat, until
// ctx ends or the connection fails.
func listen(ctx context.Context, pool *pgxpool.Pool, app, channel string, heartbeat time.Duration, catch func(context.Context, *pgx.Conn) error) error {
	cfg := pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = app
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	for {
		if err := catch(ctx, conn); err != nil {
			return err
		}
		if err := waitNotification(ctx, conn, heartbeat); err != nil {
			return err
		}
	}
}

// waitNotification waits for a notification on conn, at most d; nil also
// when d passes.
func waitNotification(ctx context.Context, conn *pgx.Conn, d time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, d)
	_, err := conn.WaitForNotification(wctx)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
