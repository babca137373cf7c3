// Package pgaudit is hearth's audit log for replicas: one signed,
// verifiable history kept in PostgreSQL (schema hearth_audit), written by
// every replica, with the same entries and the same c2sp.org checkpoints
// as the file log of package audit, so that one verifier reads both
// (Verify here, or Export then audit.Verify).
//
// # Design
//
// Every replica opens a Log on the same database, with the same audit
// keys (the data dir's audit/log.key, log.pub and hmac.key, copied to every
// replica). A Record is batched with the replica's concurrent Records into
// one multi-row INSERT (group commit per replica), then waits. Entries have
// no position yet: one Sequencer at a time — the replica whose candidate
// holds the advisory lock LockKey on its own connection — takes committed,
// unsequenced entries in id order and, in one transaction per batch,
// numbers them, stores their Merkle tree hashes, signs a checkpoint
// covering them and advances the fencing row (state). Each replica has
// one listening connection that wakes the Records a new checkpoint covers.
// So a Record returns only when its entry is committed, sequenced and
// covered by a signed checkpoint stored in PostgreSQL (durable as
// PostgreSQL's commits are: synchronous_commit on).
//
// Fencing: a sequencer that takes over increments state.epoch; each batch
// first locks the state row and refuses to write (ErrFenced) unless the
// epoch is still its own, and advances the size only WHERE epoch and size
// are what it read. A sequencer's writes go over the connection that holds
// the lock, so losing the connection both ends its lock and rolls its batch
// back.
//
// Fail closed: a Record waits at most Options.MaxWait (and its ctx). If no
// checkpoint covers its entry by then, it withdraws the entry (deletes it
// while it is still unsequenced, under a share lock of the fencing row that
// each sequencer batch locks for update, so an entry is either withdrawn or
// sequenced, never both) and returns an
// error: the caller answers 503 and the entry is not in the history, as
// with the file log. If the database cannot be reached to withdraw it, the
// error says the entry may still be sequenced later.
//
// AppendTx and Wait are the other way in: the store inserts the entries of
// a change in the change's own transaction, so the change and its entries
// commit together or not at all, and waits after the commit; its entries
// are never withdrawn (the change happened), so a Wait that times out means
// "committed, will be in the history, but not yet covered": the request
// answers 503 for a change that was made.
package pgaudit

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgmigrate"
)

// Schema is the PostgreSQL schema of the audit tables.
const Schema = "hearth_audit"

// LockKey is the advisory-lock key the active sequencer holds ("hearthAL").
const LockKey int64 = 0x686561727468414c

// Channels: entriesChannel is notified when a replica has inserted entries
// (the sequencer listens), checkpointChannel when a batch commits (the
// replicas' waiters listen).
const (
	entriesChannel    = "hearth_audit_entries"
	checkpointChannel = "hearth_audit_checkpoint"
)

// Application names of the dedicated connections, so that an operator (or
// a test) can find them in pg_stat_activity.
const (
	SequencerApplicationName = "hearth-audit-sequencer"
	WaiterApplicationName    = "hearth-audit-waiter"
)

// Errors.
var (
	// ErrFenced: another sequencer has taken over; this one appends nothing.
	ErrFenced = errors.New("pgaudit: sequencer fenced off by a newer one")
	// ErrClosed: Record after Close.
	ErrClosed = errors.New("pgaudit: log is closed")
	// ErrNotCovered wraps the error of a Record or Wait whose entry no
	// checkpoint covered in time (no sequencer, or the database is slow or
	// unreachable): the caller answers 503.
	ErrNotCovered = errors.New("pgaudit: no signed checkpoint covers the entry yet")
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate brings the audit schema up to date, safely when several replicas
// start at once (pgmigrate's advisory lock).
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	migs, err := pgmigrate.Load(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("pgaudit: %w", err)
	}
	if _, err := pgmigrate.Run(ctx, pool, Schema, migs); err != nil {
		return fmt.Errorf("pgaudit: %w", err)
	}
	return nil
}

// Options tune a Log. The zero value is the default.
type Options struct {
	// Name identifies the replica (in the fencing row, in logs). Default
	// hostname:pid.
	Name string
	// Logger gets takeovers and failures.
	Logger zerolog.Logger
	// Now is the clock for events recorded without a time. Default
	// time.Now.
	Now func() time.Time
	// MaxWait bounds how long a Record waits for a covering checkpoint
	// before it withdraws its entry and fails (503); the withdrawal takes
	// at most 2 s more (and the INSERT itself at least 2 s, see
	// insertWait). Default 5 s.
	MaxWait time.Duration
	// MaxBatch bounds the entries of one INSERT. Default 1024.
	MaxBatch int
	// Inserters is how many INSERTs a replica may have in flight. Default 2.
	Inserters int
	// SequencerBatch bounds the entries of one sequencer batch. Default and
	// maximum audit.MaxBatchLimit (so that an export is a file log whose
	// batches the file log could have written).
	SequencerBatch int
	// NoSequencer: this replica runs no sequencer candidate (tests, or a
	// replica that only records).
	NoSequencer bool
	// Witnesses cosign the checkpoints (c2sp.org/tlog-witness): the replica
	// that is the sequencer pushes the latest checkpoint to each, at most
	// once per WitnessInterval (default 1 s), and keeps their cosignatures
	// in <data dir>/audit/witnesses, as the file log does. Every replica
	// should have the same list.
	Witnesses       []audit.Witness
	WitnessInterval time.Duration
	// HTTPClient pushes to the witnesses; default a 10-second timeout.
	HTTPClient *http.Client
	// Heartbeat is the longest a listening connection (waiter, sequencer)
	// waits without a notification before it looks anyway, and the pause
	// before a failed one reconnects. Default 100 ms.
	Heartbeat time.Duration
}

// Log is one replica's handle on the shared audit history. It implements
// audit.Recorder and audit.SecretIdentifier, and is safe for concurrent
// use.
type Log struct {
	pool   *pgxpool.Pool
	signer *audit.Signer
	opts   Options
	log    zerolog.Logger

	sendMu sync.RWMutex
	closed bool
	reqs   chan *request

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	w      *waiter
	seq    *Sequencer
	wpush  *audit.WitnessPusher // nil without witnesses or sequencer

	born       time.Time
	lastNotify atomic.Int64 // since born, of the last insert that notified
	late       atomic.Int64 // Records answered by withdraw finding them sequenced
}

type request struct {
	enc      encoded
	id       int64
	inserted chan error // the INSERT's outcome
	seq      chan int64 // the position, once covered
}

var (
	_ audit.Recorder         = (*Log)(nil)
	_ audit.SecretIdentifier = (*Log)(nil)
)

// Open opens the history on pool for the log whose keys are in
// <dir>/audit, migrating the schema if needed, binds an empty database to
// this log (and refuses one bound to another log's key), starts this
// replica's waiter, inserters and sequencer candidate, and records an
// audit.start entry. Close stops it; the pool stays the caller's.
func Open(ctx context.Context, pool *pgxpool.Pool, dir string, opts Options) (*Log, error) {
	signer, err := audit.LoadSigner(dir)
	if err != nil {
		return nil, err
	}
	return open(ctx, pool, filepath.Join(dir, audit.DirName), signer, opts)
}

func open(ctx context.Context, pool *pgxpool.Pool, adir string, signer *audit.Signer, opts Options) (*Log, error) {
	if err := (audit.Config{Witnesses: opts.Witnesses}).Validate(); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		h, _ := os.Hostname()
		opts.Name = fmt.Sprintf("%s:%d", h, os.Getpid())
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = 5 * time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.Inserters <= 0 {
		opts.Inserters = 2
	}
	if opts.SequencerBatch <= 0 || opts.SequencerBatch > audit.MaxBatchLimit {
		opts.SequencerBatch = audit.MaxBatchLimit
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 100 * time.Millisecond
	}
	if err := Migrate(ctx, pool); err != nil {
		return nil, err
	}
	if err := bind(ctx, pool, signer); err != nil {
		return nil, err
	}
	l := &Log{pool: pool, signer: signer, opts: opts, log: opts.Logger, reqs: make(chan *request, 4*opts.MaxBatch), born: time.Now()}
	l.lastNotify.Store(-int64(time.Hour))
	l.ctx, l.cancel = context.WithCancel(context.Background())
	w, err := newWaiter(ctx, pool, opts.Heartbeat, opts.Logger)
	if err != nil {
		l.cancel()
		return nil, err
	}
	l.w = w
	for range opts.Inserters {
		l.wg.Add(1)
		go l.insertLoop()
	}
	if !opts.NoSequencer && len(opts.Witnesses) > 0 {
		if l.wpush, err = audit.NewWitnessPusher(adir, opts.Witnesses, opts.HTTPClient, signer.Verifier(), l, opts.Logger); err != nil {
			l.cancel()
			l.w.close()
			return nil, err
		}
	}
	if !opts.NoSequencer {
		l.seq = &Sequencer{Pool: pool, Signer: signer, Name: opts.Name, Batch: opts.SequencerBatch, Idle: opts.Heartbeat, Logger: opts.Logger}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.seq.Candidate(l.ctx)
		}()
		if l.wpush != nil {
			l.wg.Add(1)
			go l.runWitnesses()
		}
	}
	if err := l.Record(ctx, audit.Event{Name: audit.EventAuditStart, Outcome: audit.OutcomeSuccess, Principal: "hearth",
		Meta: map[string]string{"replica": truncate(opts.Name, 1024), "store": "postgres"}}); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// bind records this log's origin and verifier key in an empty database and
// refuses a database bound to another log.
func bind(ctx context.Context, pool *pgxpool.Pool, s *audit.Signer) error {
	if _, err := pool.Exec(ctx, "UPDATE "+Schema+".state SET origin = $1, verifier_key = $2 WHERE origin IS NULL", s.Origin(), s.VerifierKey()); err != nil {
		return fmt.Errorf("pgaudit: %w", err)
	}
	var origin, vkey string
	if err := pool.QueryRow(ctx, "SELECT origin, verifier_key FROM "+Schema+".state").Scan(&origin, &vkey); err != nil {
		return fmt.Errorf("pgaudit: %w", err)
	}
	if origin != s.Origin() || vkey != s.VerifierKey() {
		return fmt.Errorf("pgaudit: the database holds the audit history of log %q (key %s), and this replica's audit key is %s: give every replica the same audit keys (copy log.key, log.pub and hmac.key of <data dir>/audit from the first replica)", origin, vkey, s.VerifierKey())
	}
	return nil
}

// Close stops the replica: Records already submitted are answered (an
// error if not yet covered), later ones get ErrClosed.
func (l *Log) Close() error {
	l.sendMu.Lock()
	if l.closed {
		l.sendMu.Unlock()
		return nil
	}
	l.closed = true
	close(l.reqs)
	l.sendMu.Unlock()
	l.cancel()
	l.wg.Wait()
	l.w.close()
	return nil
}

// Record implements audit.Recorder: it returns once the entry is committed,
// sequenced and covered by a signed checkpoint in PostgreSQL. On error the
// caller refuses its request (503); the entry is not in the history, except
// when the error says it could not be withdrawn.
func (l *Log) Record(ctx context.Context, e audit.Event) error {
	_, err := l.Append(ctx, e)
	return err
}

// Append is Record that also returns the entry's position in the log.
func (l *Log) Append(ctx context.Context, e audit.Event) (int64, error) {
	enc, err := encode(e, l.opts.Now())
	if err != nil {
		return -1, err
	}
	r := &request{enc: enc, inserted: make(chan error, 1), seq: make(chan int64, 1)}
	deadline := time.NewTimer(l.opts.MaxWait)
	defer deadline.Stop()
	l.sendMu.RLock()
	if l.closed {
		l.sendMu.RUnlock()
		return -1, ErrClosed
	}
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		l.sendMu.RUnlock()
		return -1, fmt.Errorf("pgaudit: %w", ctx.Err())
	case <-deadline.C:
		l.sendMu.RUnlock()
		return -1, fmt.Errorf("%w: the replica's queue is full", ErrNotCovered)
	}
	l.sendMu.RUnlock()
	// The inserter always answers (its INSERT is bounded by MaxWait).
	if err := <-r.inserted; err != nil {
		return -1, err
	}
	select {
	case s := <-r.seq:
		return s, nil
	case <-ctx.Done():
	case <-deadline.C:
	case <-l.ctx.Done():
	}
	l.w.forget(r.id)
	return l.withdraw(r, ctx.Err())
}

// insertWait is the least time an INSERT of entries may take (it may take
// up to MaxWait if that is longer): its failure leaves the outcome unknown
// when it is not the server's refusal.
const insertWait = 2 * time.Second

// withdrawWait bounds a withdrawal: a Record takes at most MaxWait plus
// this long.
const withdrawWait = 2 * time.Second

// withdraw takes back the entry of a Record that timed out: deleted while
// unsequenced (after a share lock of the fencing row, which every
// sequencer batch holds for update: the DELETE's snapshot comes after any
// batch in progress, and no batch starts until it commits; so it is either
// deleted here or sequenced there), or, if sequenced meanwhile, returned
// as recorded.
func (l *Log) withdraw(r *request, cause error) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), withdrawWait)
	defer cancel()
	var seq *int64
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT 1 FROM "+Schema+".state FOR SHARE"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM "+Schema+".entries WHERE id = $1 AND seq IS NULL", r.id); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, "SELECT seq FROM "+Schema+".entries WHERE id = $1", r.id).Scan(&seq)
		if errors.Is(err, pgx.ErrNoRows) {
			seq = nil
			return nil
		}
		return err
	})
	if err != nil {
		l.log.Error().Err(err).Int64("id", r.id).Msg("pgaudit: cannot withdraw an entry that no checkpoint covered in time; it may still be sequenced")
		return -1, fmt.Errorf("%w (waited %v; withdrawing it failed, so it may still be sequenced later: %v)", ErrNotCovered, l.opts.MaxWait, err)
	}
	if seq != nil {
		l.late.Add(1)
		return *seq, nil
	}
	why := fmt.Sprintf("waited %v; is a sequencer running?", l.opts.MaxWait)
	if cause != nil {
		why = cause.Error()
	}
	return -1, fmt.Errorf("%w (%s); the entry was withdrawn", ErrNotCovered, why)
}

// insertLoop takes the queued Records, as many as are waiting up to
// MaxBatch, and inserts them with one statement in one transaction.
func (l *Log) insertLoop() {
	defer l.wg.Done()
	batch := make([]*request, 0, l.opts.MaxBatch)
	var rows newEntries
	for {
		r, ok := <-l.reqs
		if !ok {
			return
		}
		rows.reset()
		batch = append(batch[:0], r)
		rows.add(r.enc)
	fill:
		for len(batch) < l.opts.MaxBatch {
			select {
			case r, ok := <-l.reqs:
				if !ok {
					break fill
				}
				batch = append(batch, r)
				rows.add(r.enc)
			default:
				break fill
			}
		}
		p0 := l.w.snapshot()
		ctx, cancel := context.WithTimeout(l.ctx, max(l.opts.MaxWait, insertWait))
		ids, err := l.insert(ctx, &rows)
		cancel()
		if err != nil {
			var pe *pgconn.PgError
			switch {
			case errors.As(err, &pe):
				// The server refused a statement: the implicit transaction
				// rolled back.
				err = fmt.Errorf("%w: inserting: %v", ErrNotCovered, err)
			case len(ids) == len(batch):
				err = fmt.Errorf("%w: inserting: %v", ErrNotCovered, err)
			default:
				// The batch was sent and may have committed, and without
				// its ids the entries cannot be withdrawn.
				err = fmt.Errorf("%w: inserting: %v; the outcome is unknown, so the entry may still be sequenced later", ErrNotCovered, err)
				l.log.Error().Err(err).Int("entries", len(batch)).Msg("pgaudit: lost the answer to an INSERT of audit entries")
			}
			if pe == nil && len(ids) == len(batch) {
				// The outcome of the commit is unknown: take the entries
				// back (or find them sequenced).
				for i, r := range batch {
					r.id = ids[i]
					go func() {
						s, werr := l.withdraw(r, err)
						if werr == nil {
							r.seq <- s
						}
						r.inserted <- werr
					}()
				}
				continue
			}
			for _, r := range batch {
				r.inserted <- err
			}
			continue
		}
		for i, r := range batch {
			r.id = ids[i]
		}
		if err := l.w.register(l.ctx, batch, p0); err != nil {
			l.log.Warn().Err(err).Msg("pgaudit: checking freshly inserted entries")
		}
		for _, r := range batch {
			r.inserted <- nil
		}
	}
}

// insert adds the bodies and returns their ids in order, in one round
// trip: the INSERT and the notification are one pipelined batch, which
// PostgreSQL runs as one implicit transaction committed at its Sync. ids
// are returned, with the error, when only the commit's outcome is unknown.
func (l *Log) insert(ctx context.Context, rows *newEntries) ([]int64, error) {
	b := &pgx.Batch{}
	b.Queue(insertSQL, rows.args()...)
	notify := l.shouldNotify()
	if notify {
		b.Queue("SELECT pg_notify($1, '')", entriesChannel)
	}
	br := l.pool.SendBatch(ctx, b)
	res, err := br.Query()
	if err != nil {
		br.Close()
		return nil, err
	}
	ids, err := collectIDs(res, len(rows.bodies))
	if err != nil {
		br.Close()
		return nil, err
	}
	if notify {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return ids, err
		}
	}
	if err := br.Close(); err != nil {
		return ids, err
	}
	return ids, nil
}

// insertSQL inserts $1's bodies in order, with their event names ($2),
// principals ($3, empty for none) and times ($4, see encoded): nextval runs
// in the order of the SELECT, which ORDER BY fixes, so sorted ids follow
// the bodies.
const insertSQL = "INSERT INTO " + Schema + ".entries (body, event, principal, at_ns) SELECT b, e, NULLIF(p, ''), a FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS t(b, e, p, a, n) ORDER BY n RETURNING id"

func collectIDs(rows pgx.Rows, n int) ([]int64, error) {
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, err
	}
	if len(ids) != n {
		return nil, fmt.Errorf("inserted %d entries of %d", len(ids), n)
	}
	slices.Sort(ids)
	return ids, nil
}

// Waking the sequencer. A transaction that NOTIFYs takes a cluster-wide
// lock at commit and holds it through its WAL flush, so notifying commits
// run one at a time (PostgreSQL's async.c, PreCommit_Notify). Under load
// the sequencer does not need them: after a batch with entries it looks
// again at once, and after an empty look it keeps looking every
// pollInterval for sequencerLinger before it sleeps on LISTEN. So a
// replica notifies only when its last notification is older than
// notifyEvery (< sequencerLinger): if the sequencer went to sleep, that
// was at least sequencerLinger after the replica's last entry, whose
// notification (or an earlier one) is then older than notifyEvery.
// (An insert slower than sequencerLinger - notifyEvery can still miss the
// sequencer's last look: its entries then wait for the sequencer's next
// look, at most Options.Heartbeat later.) notifyEvery = 0 (benchmarks)
// notifies on every insert.
var notifyEvery = time.Millisecond

const (
	pollInterval    = time.Millisecond
	sequencerLinger = 50 * time.Millisecond
)

// shouldNotify reports whether this insert must notify the sequencer, and
// if so counts it as notified.
func (l *Log) shouldNotify() bool {
	if notifyEvery <= 0 {
		return true
	}
	now := time.Since(l.born)
	last := l.lastNotify.Load()
	if now-time.Duration(last) < notifyEvery {
		return false
	}
	// Lost to a concurrent inserter: that one notifies.
	return l.lastNotify.CompareAndSwap(last, int64(now))
}

func insertTx(ctx context.Context, tx pgx.Tx, in *newEntries) ([]int64, error) {
	rows, err := tx.Query(ctx, insertSQL, in.args()...)
	if err != nil {
		return nil, err
	}
	ids, err := collectIDs(rows, len(in.bodies))
	if err != nil {
		return nil, err
	}
	// Always: the caller's transaction may yet roll back, taking its
	// notification with it, so it does not count as one.
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, '')", entriesChannel); err != nil {
		return nil, err
	}
	return ids, nil
}

// Entry ids, returned by AppendTx, name entries before they have a
// position.
type EntryID int64

// AppendTx adds events to the history in the caller's transaction tx (the
// store's, so that a change and its entries commit together) and returns
// their ids for Wait, called after the commit. The entries are never
// withdrawn: once tx commits they will be sequenced.
func (l *Log) AppendTx(ctx context.Context, tx pgx.Tx, events ...audit.Event) ([]EntryID, error) {
	if len(events) == 0 {
		return nil, nil
	}
	var in newEntries
	for _, e := range events {
		enc, err := encode(e, l.opts.Now())
		if err != nil {
			return nil, err
		}
		in.add(enc)
	}
	ids, err := insertTx(ctx, tx, &in)
	if err != nil {
		return nil, fmt.Errorf("pgaudit: %w", err)
	}
	out := make([]EntryID, len(ids))
	for i, id := range ids {
		out[i] = EntryID(id)
	}
	return out, nil
}

// Wait waits until every entry in ids (from AppendTx, committed) is
// covered by a signed checkpoint, at most MaxWait and ctx, and returns
// their positions. An error wrapping ErrNotCovered means they are
// committed and will be sequenced, but the caller must not claim success
// yet (503).
func (l *Log) Wait(ctx context.Context, ids []EntryID) ([]int64, error) {
	reqs := make([]*request, len(ids))
	for i, id := range ids {
		reqs[i] = &request{id: int64(id), seq: make(chan int64, 1)}
	}
	if err := l.w.register(ctx, reqs, -1); err != nil {
		for _, r := range reqs {
			l.w.forget(r.id)
		}
		return nil, fmt.Errorf("%w: %v", ErrNotCovered, err)
	}
	deadline := time.NewTimer(l.opts.MaxWait)
	defer deadline.Stop()
	out := make([]int64, len(ids))
	for i, r := range reqs {
		select {
		case out[i] = <-r.seq:
			continue
		case <-ctx.Done():
		case <-deadline.C:
		case <-l.ctx.Done():
		}
		for _, r := range reqs {
			l.w.forget(r.id)
		}
		return nil, fmt.Errorf("%w (waited up to %v); the entries are committed and will be sequenced", ErrNotCovered, l.opts.MaxWait)
	}
	return out, nil
}

// SecretID implements audit.SecretIdentifier with the log's HMAC key
// (the same on every replica).
func (l *Log) SecretID(secret []byte) string { return l.signer.SecretID(secret) }

// Origin is the log's name.
func (l *Log) Origin() string { return l.signer.Origin() }

// VerifierKey is the verifier key of its checkpoints.
func (l *Log) VerifierKey() string { return l.signer.VerifierKey() }

// Sequencing reports whether this replica's candidate is the sequencer now.
func (l *Log) Sequencing() bool { return l.seq != nil && l.seq.Active() }
