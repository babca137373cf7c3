package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/tlog"
)

// The audit history on PostgreSQL (a prototype of the design in
// /work/notes/issue-12.md; the audit package does not use it yet).
//
// A request adds its entry with [EnqueueAudit] in the transaction of the
// change it records, so the change and its entry commit together or not
// at all. One [Sequencer] at a time — the holder of an advisory lock —
// takes committed, unsequenced entries in batches and, in one transaction
// per batch, numbers them, stores their Merkle tree hashes, signs a
// checkpoint covering them and advances the fencing row; the request
// answers once a checkpoint covers its entry ([WaitAudited]).
//
// If the sequencer dies mid-batch, its transaction rolls back and its
// lock goes with its connection: the batch's entries stay unsequenced and
// the next sequencer (another replica, waiting on the lock) takes them.
// Requests meanwhile keep waiting, and answer 503 if their deadline
// passes first — their change is committed and its entry will be
// sequenced, so the history stays complete.

// AuditLockKey is the advisory-lock key the active sequencer holds.
const AuditLockKey int64 = 0x6865617274684155 // "hearthAU"

// SequencerApplicationName is the application_name of the sequencer's
// connection.
const SequencerApplicationName = "hearth-audit-sequencer"

// auditChannel is notified when entries are enqueued; checkpointChannel
// when a batch commits (payload: the new tree size).
const (
	auditChannel      = "hearth_audit"
	checkpointChannel = "hearth_audit_checkpoint"
)

// ErrFenced is returned by Sequencer.Run when another sequencer has taken
// over (the fencing row's epoch moved on): this one must not append.
var ErrFenced = errors.New("pgstore: audit sequencer fenced off by a newer one")

// EnqueueAudit adds an audit entry to tx and returns its id (not its
// position in the log: the sequencer assigns that).
func EnqueueAudit(ctx context.Context, tx pgx.Tx, body []byte) (int64, error) {
	var id int64
	if err := tx.QueryRow(ctx, "INSERT INTO "+Schema+".audit_entries (body) VALUES ($1) RETURNING id", body).Scan(&id); err != nil {
		return 0, fmt.Errorf("pgstore: enqueueing an audit entry: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, '')", auditChannel); err != nil {
		return 0, fmt.Errorf("pgstore: enqueueing an audit entry: %w", err)
	}
	return id, nil
}

// WaitAudited waits, polling, until the entry id is covered by a stored
// checkpoint and returns its position in the log. A replica with many
// requests uses an AuditWaiter instead (one listener for all of them).
func WaitAudited(ctx context.Context, pool *pgxpool.Pool, id int64) (int64, error) {
	wait := 500 * time.Microsecond
	for {
		var seq *int64
		var size int64
		err := pool.QueryRow(ctx, "SELECT e.seq, s.size FROM "+Schema+".audit_entries e, "+Schema+".audit_sequencer s WHERE e.id = $1", id).Scan(&seq, &size)
		if err != nil {
			return 0, fmt.Errorf("pgstore: waiting for audit entry %d: %w", id, err)
		}
		if seq != nil && *seq < size {
			return *seq, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("pgstore: waiting for audit entry %d: %w", id, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// Sequencer numbers and checkpoints the audit entries of every replica.
type Sequencer struct {
	// Pool is where its connection's settings come from.
	Pool *pgxpool.Pool
	// Sign returns the signed checkpoint note for a tree of size entries
	// with the given root (the audit package's checkpoint format).
	Sign func(size int64, root tlog.Hash) (string, error)
	// Name identifies this replica in the fencing row.
	Name string
	// Batch bounds the entries per batch; 0 means 512.
	Batch int
	// Idle is how long to wait for a notification before looking again;
	// 0 means 100 ms.
	Idle time.Duration
	// Logger receives takeovers.
	Logger zerolog.Logger
}

// Run waits to become the sequencer (the advisory lock), then sequences
// until ctx ends (returning ctx's error), its connection fails, or it is
// fenced off (ErrFenced).
func (s *Sequencer) Run(ctx context.Context) error {
	cfg := s.Pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = SequencerApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("pgstore: sequencer: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", AuditLockKey); err != nil {
		return fmt.Errorf("pgstore: sequencer: waiting for the lock: %w", err)
	}
	var epoch, size int64
	if err := conn.QueryRow(ctx, "UPDATE "+Schema+".audit_sequencer SET epoch = epoch + 1, holder = $1 RETURNING epoch, size", s.Name).Scan(&epoch, &size); err != nil {
		return fmt.Errorf("pgstore: sequencer: taking over: %w", err)
	}
	s.Logger.Info().Int64("epoch", epoch).Int64("size", size).Msg("pgstore: this replica is the audit sequencer")
	if _, err := conn.Exec(ctx, "LISTEN "+auditChannel); err != nil {
		return fmt.Errorf("pgstore: sequencer: %w", err)
	}
	batch, idle := s.Batch, s.Idle
	if batch <= 0 {
		batch = 512
	}
	if idle <= 0 {
		idle = 100 * time.Millisecond
	}
	for {
		n, err := s.batch(ctx, conn, epoch, batch)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if n == batch {
			continue // more may be waiting
		}
		wctx, cancel := context.WithTimeout(ctx, idle)
		_, err = conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("pgstore: sequencer: %w", err)
		}
	}
}

// batch sequences up to max entries in one transaction and returns how
// many.
func (s *Sequencer) batch(ctx context.Context, conn *pgx.Conn, epoch int64, max int) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// The fencing row first, locked: a newer sequencer has a higher
		// epoch, and then nothing of this batch may be written.
		var cur, size int64
		if err := tx.QueryRow(ctx, "SELECT epoch, size FROM "+Schema+".audit_sequencer FOR UPDATE").Scan(&cur, &size); err != nil {
			return err
		}
		if cur != epoch {
			return ErrFenced
		}
		rows, err := tx.Query(ctx, "SELECT id, body FROM "+Schema+".audit_entries WHERE seq IS NULL ORDER BY id LIMIT $1", max)
		if err != nil {
			return err
		}
		var ids []int64
		var bodies [][]byte
		for rows.Next() {
			var id int64
			var b []byte
			if err := rows.Scan(&id, &b); err != nil {
				rows.Close()
				return err
			}
			ids, bodies = append(ids, id), append(bodies, b)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		base := tlog.StoredHashCount(size)
		var fresh []tlog.Hash // stored hashes from index base on
		reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			return readHashes(ctx, tx, idx, base, fresh)
		})
		seqs := make([]int64, len(ids))
		for i, b := range bodies {
			seqs[i] = size + int64(i)
			hs, err := tlog.StoredHashes(seqs[i], b, reader)
			if err != nil {
				return err
			}
			fresh = append(fresh, hs...)
		}
		newSize := size + int64(len(ids))
		root, err := tlog.TreeHash(newSize, reader)
		if err != nil {
			return err
		}
		note, err := s.Sign(newSize, root)
		if err != nil {
			return fmt.Errorf("signing the checkpoint: %w", err)
		}
		if _, err := tx.Exec(ctx, "UPDATE "+Schema+".audit_entries e SET seq = v.seq FROM unnest($1::bigint[], $2::bigint[]) AS v(id, seq) WHERE e.id = v.id", ids, seqs); err != nil {
			return err
		}
		idxs := make([]int64, len(fresh))
		hashes := make([][]byte, len(fresh))
		for i := range fresh {
			idxs[i] = base + int64(i)
			hashes[i] = fresh[i][:]
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+Schema+".audit_hashes (idx, hash) SELECT * FROM unnest($1::bigint[], $2::bytea[])", idxs, hashes); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+Schema+".audit_checkpoints (size, root, note, epoch) VALUES ($1, $2, $3, $4)", newSize, root[:], note, epoch); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, "UPDATE "+Schema+".audit_sequencer SET size = $1 WHERE epoch = $2 AND size = $3", newSize, epoch, size)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return ErrFenced
		}
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", checkpointChannel, fmt.Sprint(newSize)); err != nil {
			return err
		}
		n = len(ids)
		return nil
	})
	if err != nil && !errors.Is(err, ErrFenced) {
		err = fmt.Errorf("pgstore: sequencer batch: %w", err)
	}
	return n, err
}

// readHashes returns the stored hashes at idx: from the table below base,
// from fresh (this batch's, not yet written) at or above it.
func readHashes(ctx context.Context, tx pgx.Tx, idx []int64, base int64, fresh []tlog.Hash) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	var want []int64
	for _, i := range idx {
		if i < base {
			want = append(want, i)
		}
	}
	got := map[int64]tlog.Hash{}
	if len(want) > 0 {
		rows, err := tx.Query(ctx, "SELECT idx, hash FROM "+Schema+".audit_hashes WHERE idx = ANY($1)", want)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var i int64
			var h []byte
			if err := rows.Scan(&i, &h); err != nil {
				rows.Close()
				return nil, err
			}
			got[i] = tlog.Hash(h)
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	for k, i := range idx {
		switch {
		case i >= base && i-base < int64(len(fresh)):
			out[k] = fresh[i-base]
		case i < base:
			h, ok := got[i]
			if !ok {
				return nil, fmt.Errorf("audit hash %d missing", i)
			}
			out[k] = h
		default:
			return nil, fmt.Errorf("audit hash %d not yet computed", i)
		}
	}
	return out, nil
}
