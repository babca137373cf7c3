package pgaudit

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/hearth-home/hearth/audit"
)

// Sequencer numbers and checkpoints the entries of every replica; one at a
// time is active, the holder of the advisory lock LockKey. Every Log runs
// one as a candidate (unless Options.NoSequencer).
type Sequencer struct {
	// Pool is where its connection's settings come from.
	Pool *pgxpool.Pool
	// Signer signs the checkpoints (the log's key, the same on every
	// replica).
	Signer *audit.Signer
	// Name identifies this replica in the fencing row.
	Name string
	// Batch bounds the entries per batch; 0 means audit.MaxBatchLimit.
	Batch int
	// Idle is the longest it waits for a notification before looking for
	// entries anyway, and the pause before a failed candidate tries again;
	// 0 means 100 ms.
	Idle time.Duration
	// Logger receives takeovers and failures.
	Logger zerolog.Logger

	active atomic.Bool
}

// Active reports whether this sequencer holds the lock and sequences.
func (s *Sequencer) Active() bool { return s.active.Load() }

// Candidate runs Run again and again (after a pause of Idle) until ctx
// ends: the replica's standing bid to be the sequencer.
func (s *Sequencer) Candidate(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		s.Logger.Warn().Err(err).Msg("pgaudit: the audit sequencer stopped; bidding again")
		select {
		case <-ctx.Done():
		case <-time.After(s.idle()):
		}
	}
}

func (s *Sequencer) idle() time.Duration {
	if s.Idle <= 0 {
		return 100 * time.Millisecond
	}
	return s.Idle
}

// Run waits to become the sequencer (the advisory lock, on a connection
// of its own), takes over (increments the epoch, checks the stored tree
// against the latest checkpoint), then sequences until ctx ends (returning
// ctx's error), its connection fails, or it is fenced off (ErrFenced).
func (s *Sequencer) Run(ctx context.Context) error {
	cfg := s.Pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = SequencerApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("pgaudit: sequencer: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", LockKey); err != nil {
		return fmt.Errorf("pgaudit: sequencer: waiting for the lock: %w", err)
	}
	var epoch, size int64
	if err := conn.QueryRow(ctx, "UPDATE "+Schema+".state SET epoch = epoch + 1, holder = $1 RETURNING epoch, size", s.Name).Scan(&epoch, &size); err != nil {
		return fmt.Errorf("pgaudit: sequencer: taking over: %w", err)
	}
	fr, err := s.frontier(ctx, conn, size)
	if err != nil {
		return fmt.Errorf("pgaudit: sequencer: refusing to extend the stored history (run `hearth audit verify --store-dsn …`): %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+entriesChannel); err != nil {
		return fmt.Errorf("pgaudit: sequencer: %w", err)
	}
	s.Logger.Info().Int64("epoch", epoch).Int64("size", size).Str("replica", s.Name).Msg("pgaudit: this replica is the audit sequencer")
	s.active.Store(true)
	defer s.active.Store(false)
	max := s.Batch
	if max <= 0 || max > audit.MaxBatchLimit {
		max = audit.MaxBatchLimit
	}
	lastWork := time.Now()
	for {
		n, err := s.batch(ctx, conn, epoch, fr, max)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if n == max {
			continue // more are waiting
		}
		if n > 0 {
			lastWork = time.Now()
		}
		// Look again at once, then every pollInterval while entries came
		// recently (replicas under load do not notify, see notifyEvery),
		// else sleep until notified. The looks are a read of the pending
		// index, not a batch: a batch locks the fencing row, which writes
		// WAL.
		if err := s.await(ctx, conn, lastWork); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("pgaudit: sequencer: %w", err)
		}
	}
}

// await returns when entries may be waiting: when a look (now, then
// every pollInterval until sequencerLinger after lastWork) finds one, on a
// notification, or after Idle.
func (s *Sequencer) await(ctx context.Context, conn *pgx.Conn, lastWork time.Time) error {
	for first := true; first || time.Since(lastWork) < sequencerLinger; first = false {
		if !first {
			notified, err := waitNotification(ctx, conn, pollInterval)
			if err != nil || notified {
				return err
			}
		}
		var pending bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+Schema+".entries WHERE seq IS NULL)").Scan(&pending); err != nil {
			return err
		}
		if pending {
			return nil
		}
	}
	_, err := waitNotification(ctx, conn, s.idle())
	return err
}

// frontier loads the tree's frontier from the stored hashes and checks it
// against the latest checkpoint: a sequencer never extends a history it
// cannot vouch for.
func (s *Sequencer) frontier(ctx context.Context, conn *pgx.Conn, size int64) (*audit.Frontier, error) {
	fr, err := audit.NewFrontier(size, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return readHashes(ctx, conn, idx)
	}))
	if err != nil {
		return nil, err
	}
	if size == 0 {
		return fr, nil
	}
	var msg []byte
	if err := conn.QueryRow(ctx, "SELECT note FROM "+Schema+".checkpoints WHERE size = $1", size).Scan(&msg); err != nil {
		return nil, fmt.Errorf("the checkpoint of size %d: %w", size, err)
	}
	c, err := audit.OpenCheckpoint(msg, noteVerifiers(s.Signer))
	if err != nil {
		return nil, fmt.Errorf("the checkpoint of size %d: %w", size, err)
	}
	root, err := fr.Root()
	if err != nil {
		return nil, err
	}
	if c.Size != size || c.Hash != root {
		return nil, fmt.Errorf("the stored hashes give root %s at size %d, the checkpoint says %s at %d", root, size, c.Hash, c.Size)
	}
	return fr, nil
}

func readHashes(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, idx []int64) ([]tlog.Hash, error) {
	rows, err := q.Query(ctx, "SELECT idx, hash FROM "+Schema+".hashes WHERE idx = ANY($1)", idx)
	if err != nil {
		return nil, err
	}
	got := map[int64]tlog.Hash{}
	var i int64
	var h []byte
	if _, err := pgx.ForEachRow(rows, []any{&i, &h}, func() error {
		if len(h) != tlog.HashSize {
			return fmt.Errorf("stored hash %d is %d bytes", i, len(h))
		}
		got[i] = tlog.Hash(h)
		return nil
	}); err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(idx))
	for k, x := range idx {
		h, ok := got[x]
		if !ok {
			return nil, fmt.Errorf("stored hash %d is missing", x)
		}
		out[k] = h
	}
	return out, nil
}

// batch sequences up to max entries in one transaction and returns how
// many. fr is the tree's frontier, advanced only when the batch commits.
//
// Two round trips: BEGIN and the locking reads in one pipeline, then the
// writes and COMMIT in another. The fencing checks that decide whether the
// batch may commit are made before the second is sent (the state row is
// locked, so its epoch cannot change after), and again inside it by
// statements that fail — aborting the transaction, so that its COMMIT
// only rolls back — when they find a row count other than the one
// expected.
func (s *Sequencer) batch(ctx context.Context, conn *pgx.Conn, epoch int64, fr *audit.Frontier, max int) (n int, err error) {
	open := false
	defer func() {
		if open {
			// After a failed statement the pipeline skipped the rest,
			// COMMIT included: end the transaction.
			if _, rerr := conn.Exec(context.Background(), "ROLLBACK"); rerr != nil && err == nil {
				err = rerr
			}
		}
		if err != nil && !errors.Is(err, ErrFenced) {
			err = fmt.Errorf("pgaudit: sequencer batch: %w", err)
		}
	}()
	// The fencing row first, locked: a newer sequencer has a higher epoch,
	// and then nothing of this batch may be written. The lock also
	// serialises the batch with withdrawals (which take the row FOR SHARE
	// first): each READ COMMITTED statement after it sees a withdrawal
	// either committed or not begun, so the entries need no row locks of
	// their own (each would be one more WAL record per entry).
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SELECT epoch, size FROM " + Schema + ".state FOR UPDATE")
	b.Queue("SELECT id, body FROM "+Schema+".entries WHERE seq IS NULL ORDER BY id LIMIT $1", max)
	open = true
	br := conn.SendBatch(ctx, b)
	var cur, size int64
	var ids []int64
	var bodies [][]byte
	err = func() error {
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		if err := br.QueryRow().Scan(&cur, &size); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		var id int64
		var body []byte
		if _, err := pgx.ForEachRow(rows, []any{&id, &body}, func() error {
			ids, bodies = append(ids, id), append(bodies, append([]byte(nil), body...))
			return nil
		}); err != nil {
			return err
		}
		return br.Close()
	}()
	if err != nil {
		return 0, err
	}
	if cur != epoch {
		return 0, ErrFenced
	}
	if size != fr.Size() {
		return 0, fmt.Errorf("%w: the tree has %d entries, this sequencer knows %d", ErrFenced, size, fr.Size())
	}
	if len(ids) == 0 {
		return 0, nil // the deferred ROLLBACK ends the read-only transaction
	}
	next := *fr
	seqs := make([]int64, len(ids))
	var fresh []tlog.Hash
	var line []byte
	for i, body := range bodies {
		seqs[i] = size + int64(i)
		line = audit.EntryLine(line[:0], seqs[i], body)
		fresh = next.Add(fresh, line)
	}
	newSize := size + int64(len(ids))
	root, err := next.Root()
	if err != nil {
		return 0, err
	}
	msg, err := s.Signer.SignCheckpoint(newSize, root)
	if err != nil {
		return 0, err
	}
	base := tlog.StoredHashCount(size)
	idxs := make([]int64, len(fresh))
	hashes := make([][]byte, len(fresh))
	for i := range fresh {
		idxs[i] = base + int64(i)
		hashes[i] = fresh[i][:]
	}
	w := &pgx.Batch{}
	// 1/0 (division_by_zero) aborts the transaction when a count is not
	// the expected one.
	w.Queue("WITH u AS (UPDATE "+Schema+".entries e SET seq = v.seq FROM unnest($1::bigint[], $2::bigint[]) AS v(id, seq) WHERE e.id = v.id RETURNING 1) SELECT 1 / (CASE WHEN count(*) = $3 THEN 1 ELSE 0 END) FROM u", ids, seqs, len(ids))
	w.Queue("INSERT INTO "+Schema+".hashes (idx, hash) SELECT * FROM unnest($1::bigint[], $2::bytea[])", idxs, hashes)
	w.Queue("INSERT INTO "+Schema+".checkpoints (size, note, epoch) VALUES ($1, $2, $3)", newSize, msg, epoch)
	w.Queue("WITH u AS (UPDATE "+Schema+".state SET size = $1 WHERE epoch = $2 AND size = $3 RETURNING 1) SELECT 1 / (SELECT count(*)::int FROM u)", newSize, epoch, size)
	w.Queue("SELECT pg_notify($1, '')", checkpointChannel)
	w.Queue("COMMIT")
	wr := conn.SendBatch(ctx, w)
	for i := range w.Len() {
		if _, err := wr.Exec(); err != nil {
			wr.Close()
			var pe *pgconn.PgError
			if i == 3 && errors.As(err, &pe) && pe.Code == "22012" {
				return 0, ErrFenced
			}
			return 0, err
		}
	}
	if err := wr.Close(); err != nil {
		return 0, err
	}
	open = false
	*fr = next
	return len(ids), nil
}

func noteVerifiers(s *audit.Signer) note.Verifiers { return note.VerifierList(s.Verifier()) }
