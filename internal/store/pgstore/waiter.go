package pgstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// AuditWaiter lets a replica's requests wait for their audit entries with
// one listening connection for all of them: on every checkpoint
// notification (and every Heartbeat, and after every reconnect, since a
// notification sent while no connection listened is lost) it reads which
// entries the new checkpoints cover — one query per batch, not per request
// — and wakes their waiters.
type AuditWaiter struct {
	pool      *pgxpool.Pool
	heartbeat time.Duration

	mu        sync.Mutex
	processed int64                  // tree size whose entries have been dispatched
	waiting   map[int64][]chan int64 // entry id → waiters
	cancel    context.CancelFunc
	done      chan struct{}
}

// WaiterApplicationName is the application_name of an AuditWaiter's
// listening connection.
const WaiterApplicationName = "hearth-audit-waiter"

// NewAuditWaiter starts a waiter on pool; heartbeat 0 means 100 ms. Close
// stops it.
func NewAuditWaiter(ctx context.Context, pool *pgxpool.Pool, heartbeat time.Duration) (*AuditWaiter, error) {
	if heartbeat <= 0 {
		heartbeat = 100 * time.Millisecond
	}
	w := &AuditWaiter{pool: pool, heartbeat: heartbeat, waiting: map[int64][]chan int64{}, done: make(chan struct{})}
	// Entries sequenced before now are found by Wait's own check; from
	// here on batches are dispatched.
	if err := pool.QueryRow(ctx, "SELECT size FROM "+Schema+".audit_sequencer").Scan(&w.processed); err != nil {
		return nil, fmt.Errorf("pgstore: audit waiter: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.run(rctx)
	return w, nil
}

// Close stops the waiter; waits in progress end with their contexts.
func (w *AuditWaiter) Close() { w.cancel(); <-w.done }

// Wait waits until entry id is covered by a stored checkpoint and returns
// its position in the log.
func (w *AuditWaiter) Wait(ctx context.Context, id int64) (int64, error) {
	ch := make(chan int64, 1)
	w.mu.Lock()
	w.waiting[id] = append(w.waiting[id], ch)
	w.mu.Unlock()
	defer w.forget(id, ch)
	// Registered first, checked second: a batch that committed before the
	// check is seen here, one after it is dispatched to ch.
	var seq *int64
	var size int64
	err := w.pool.QueryRow(ctx, "SELECT e.seq, s.size FROM "+Schema+".audit_entries e, "+Schema+".audit_sequencer s WHERE e.id = $1", id).Scan(&seq, &size)
	if err != nil {
		return 0, fmt.Errorf("pgstore: waiting for audit entry %d: %w", id, err)
	}
	if seq != nil && *seq < size {
		return *seq, nil
	}
	select {
	case s := <-ch:
		return s, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("pgstore: waiting for audit entry %d: %w", id, ctx.Err())
	}
}

func (w *AuditWaiter) forget(id int64, ch chan int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	chs := w.waiting[id]
	for i, c := range chs {
		if c == ch {
			chs = append(chs[:i], chs[i+1:]...)
			break
		}
	}
	if len(chs) == 0 {
		delete(w.waiting, id)
	} else {
		w.waiting[id] = chs
	}
}

func (w *AuditWaiter) run(ctx context.Context) {
	defer close(w.done)
	l := listener{pool: w.pool, appName: WaiterApplicationName, channel: checkpointChannel, heartbeat: w.heartbeat}
	l.run(ctx, w.dispatch, nil)
}

// dispatch wakes the waiters of the entries sequenced since processed.
func (w *AuditWaiter) dispatch(ctx context.Context, conn *pgx.Conn) error {
	var size int64
	if err := conn.QueryRow(ctx, "SELECT size FROM "+Schema+".audit_sequencer").Scan(&size); err != nil {
		return err
	}
	w.mu.Lock()
	from := w.processed
	w.mu.Unlock()
	if size <= from {
		return nil
	}
	rows, err := conn.Query(ctx, "SELECT id, seq FROM "+Schema+".audit_entries WHERE seq >= $1 AND seq < $2", from, size)
	if err != nil {
		return err
	}
	defer rows.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	for rows.Next() {
		var id, seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return err
		}
		for _, ch := range w.waiting[id] {
			ch <- seq
		}
		delete(w.waiting, id)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	w.processed = size
	return nil
}
