package pgstore

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// listener is a dedicated connection LISTENing on one channel, for the
// feed and the audit waiter. PostgreSQL drops notifications sent while no
// connection listens, so the pattern is: on every (re)connect, every
// notification and every heartbeat, read the table the notifications are
// about (catch).
type listener struct {
	pool      *pgxpool.Pool
	appName   string        // application_name of the connection
	channel   string        // LISTEN channel
	heartbeat time.Duration // longest wait without a notification
	dial      time.Duration // bound on connecting; 0: none but ctx
}

// run keeps a listening connection and calls catch as described, until ctx
// ends (returning nil); after a failure it waits a heartbeat and
// reconnects, reporting the failure to lost (when not nil).
func (l listener) run(ctx context.Context, catch func(context.Context, *pgx.Conn) error, lost func(error)) {
	for ctx.Err() == nil {
		err := l.once(ctx, catch)
		if ctx.Err() != nil {
			return
		}
		if lost != nil {
			lost(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(l.heartbeat):
		}
	}
}

// once runs one connection until it fails or ctx ends.
func (l listener) once(ctx context.Context, catch func(context.Context, *pgx.Conn) error) error {
	cfg := l.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = l.appName
	cctx, cancel := ctx, context.CancelFunc(func() {})
	if l.dial > 0 {
		cctx, cancel = context.WithTimeout(ctx, l.dial)
	}
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.channel}.Sanitize()); err != nil {
		return err
	}
	for {
		if err := catch(ctx, conn); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, l.heartbeat)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
}
