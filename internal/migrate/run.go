package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgaudit"
	"github.com/hearth-home/hearth/internal/pgnosql"
	"github.com/hearth-home/hearth/internal/store/boltstore"
	"github.com/hearth-home/hearth/internal/store/pgstore"
)

// Options say what to move where.
type Options struct {
	// From is the data dir of the embedded installation.
	From string
	// To is the PostgreSQL DSN (pgstore.CheckDSN: no password in it). It
	// may be empty only with Check.
	To string
	// Check only counts (and, with To, checks that the target is reachable
	// and empty); nothing is written anywhere.
	Check bool
	// Progress, if set, gets one line per step.
	Progress io.Writer
	// LockTimeout is how long the source's databases are waited for;
	// 0 means DefaultLockTimeout.
	LockTimeout time.Duration
}

// Report is what was counted (and, unless Check, moved: the target then
// holds exactly this).
type Report struct {
	From  string      `json:"from"`
	Store Tallies     `json:"store"`
	CA    Tallies     `json:"ca"`
	Audit AuditCounts `json:"audit"`
	// Moved is true once everything was copied and compared.
	Moved bool `json:"moved"`
	// TargetChecked is true when the target was reached and found empty.
	TargetChecked bool `json:"target_checked"`
}

// lockKey is the session advisory lock a migration holds on the target
// ("hearthMV"), so that two migrations do not write into it at once. It
// differs from pgmigrate.LockKey, which the stores' Open take meanwhile.
const lockKey int64 = 0x6865617274684d56

// StartOver is what to do with a target that holds hearth data.
const StartOver = "migrate into a new, empty database (e.g. `createdb hearth_new`), or, if what it holds is a failed migration's leftovers and nothing serves from it, empty it with `psql -d DB -c 'DROP SCHEMA hearth, hearth_ca, hearth_audit CASCADE'` and run hearth migrate again"

// Run counts the data dir opts.From and, unless opts.Check, moves it into
// the PostgreSQL database opts.To (see the package documentation). The
// report is non-nil whenever the source could be opened.
func Run(ctx context.Context, opts Options) (*Report, error) {
	progress := func(format string, args ...any) {
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, format+"\n", args...)
		}
	}
	if opts.To == "" && !opts.Check {
		return nil, errors.New("migrate: give the target with --to postgres://… (or count only with --check)")
	}
	if opts.To != "" {
		// Before touching the source: a DSN with a password is refused
		// whatever else happens.
		if err := pgstore.CheckDSN(opts.To); err != nil {
			return nil, err
		}
	}
	src, err := openSource(opts.From, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	defer src.close()
	rep := &Report{From: opts.From}
	storeNames, err := boltBuckets(src.db)
	if err != nil {
		return nil, err
	}
	if rep.Store, err = storeTallies(ctx, src.st, storeNames); err != nil {
		return nil, fmt.Errorf("migrate: reading %s: %w", StoreFile, err)
	}
	caNames, err := boltBuckets(src.cadb)
	if err != nil {
		return nil, err
	}
	caSrc := boltstore.New(src.cadb)
	if rep.CA, err = storeTallies(ctx, caSrc, caNames); err != nil {
		return nil, fmt.Errorf("migrate: reading %s: %w", CADBFile, err)
	}
	progress("%s: %d buckets, %d records; %s: %d tables, %d records; verifying the audit log…", StoreFile, len(rep.Store), rep.Store.Records(), CADBFile, len(rep.CA), rep.CA.Records())
	if rep.Audit, err = countAudit(opts.From); err != nil {
		return rep, err
	}
	progress("audit: %d entries, %d checkpoints, tree head %s", rep.Audit.Entries, rep.Audit.Checkpoints, rep.Audit.Root)
	if opts.To == "" {
		return rep, nil
	}

	cfg, err := pgxpool.ParseConfig(opts.To)
	if err != nil {
		return rep, fmt.Errorf("migrate: the target DSN: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "hearth-migrate"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return rep, fmt.Errorf("migrate: connecting to the target: %w", err)
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return rep, fmt.Errorf("migrate: connecting to the target: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", lockKey).Scan(&locked); err != nil {
		return rep, fmt.Errorf("migrate: the target: %w", err)
	}
	if !locked {
		return rep, errors.New("migrate: another hearth migrate is writing into this database: wait for it to finish")
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey)
	holds, err := targetHolds(ctx, pool)
	if err != nil {
		return rep, err
	}
	if len(holds) > 0 {
		return rep, fmt.Errorf("%w (%s): nothing was written; %s", ErrNotEmpty, strings.Join(holds, ", "), StartOver)
	}
	rep.TargetChecked = true
	if opts.Check {
		progress("the target is reachable and holds no hearth data")
		return rep, nil
	}

	// From here on every area that was written is undone if a later one
	// fails, newest first.
	var undo []func(context.Context) error
	fail := func(err error) (*Report, error) {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		errs := []error{err}
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](uctx); uerr != nil {
				errs = append(errs, fmt.Errorf("migrate: undoing a step also failed, the target may hold part of the data (%s): %w", StartOver, uerr))
			}
		}
		return rep, errors.Join(errs...)
	}

	kv, err := pgstore.Open(ctx, opts.To, pgstore.Options{ApplicationName: "hearth-migrate"})
	if err != nil {
		return rep, fmt.Errorf("migrate: opening the PostgreSQL store: %w", err)
	}
	defer kv.Close()
	progress("%s: copying %d buckets, %d records…", StoreFile, len(rep.Store), rep.Store.Records())
	if err := copyStore(ctx, src.st, storeNames, rep.Store, kv); err != nil {
		return fail(err)
	}
	undo = append(undo, func(ctx context.Context) error { return clearStore(ctx, kv, storeNames) })

	ndb, err := pgnosql.New(pool, pgnosql.DefaultSchema)
	if err != nil {
		return fail(err)
	}
	progress("%s: copying %d tables, %d records…", CADBFile, len(rep.CA), rep.CA.Records())
	undo = append(undo, func(ctx context.Context) error { return clearCA(ctx, pool, pgnosql.DefaultSchema, caNames) })
	if err := copyCA(ctx, caSrc, caNames, rep.CA, ndb); err != nil {
		return fail(err)
	}

	progress("audit: copying %d entries and %d checkpoints…", rep.Audit.Entries, rep.Audit.Checkpoints)
	if err := copyAudit(ctx, pool, opts.From, rep.Audit, progress); err != nil {
		return fail(err)
	}
	undo = append(undo, func(ctx context.Context) error { return clearAudit(ctx, pool) })
	// And the history as the replicas' verifier reads it.
	signer, err := audit.LoadSigner(opts.From)
	if err != nil {
		return fail(err)
	}
	res, err := pgaudit.Verify(ctx, pool, pgaudit.VerifyOptions{VerifierKey: signer.VerifierKey()})
	if err != nil {
		return fail(fmt.Errorf("%w: the imported audit history does not verify: %v", ErrMismatch, err))
	}
	if res.Entries != rep.Audit.Entries || res.Checkpoints != rep.Audit.Checkpoints || res.Root != rep.Audit.Root && rep.Audit.Entries > 0 {
		return fail(fmt.Errorf("%w: the imported audit history verifies with %d entries, %d checkpoints, tree head %s; the file log has %d, %d, %s", ErrMismatch, res.Entries, res.Checkpoints, res.Root, rep.Audit.Entries, rep.Audit.Checkpoints, rep.Audit.Root))
	}
	rep.Moved = true
	progress("done: every record, table, entry and checkpoint is in the target and compared")
	return rep, nil
}

// targetHolds lists what hearth data the target holds: records of the
// store, of the CA's tables, audit entries or checkpoints. Schemas and
// empty tables (created by a replica's start) are not data.
func targetHolds(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	tables := []string{}
	rows, err := pool.Query(ctx, `SELECT table_schema, table_name FROM information_schema.tables
		WHERE table_type = 'BASE TABLE' AND (table_schema = $1
			OR (table_schema = $2 AND table_name = 'kv')
			OR (table_schema = $3 AND table_name IN ('entries', 'checkpoints')))
		ORDER BY 1, 2`, pgnosql.DefaultSchema, pgstore.Schema, pgaudit.Schema)
	if err != nil {
		return nil, fmt.Errorf("migrate: reading the target's tables: %w", err)
	}
	var schema, name string
	if _, err := pgx.ForEachRow(rows, []any{&schema, &name}, func() error {
		tables = append(tables, pgx.Identifier{schema, name}.Sanitize())
		return nil
	}); err != nil {
		return nil, fmt.Errorf("migrate: reading the target's tables: %w", err)
	}
	var holds []string
	for _, t := range tables {
		var n int64
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+t).Scan(&n); err != nil {
			return nil, fmt.Errorf("migrate: counting %s: %w", t, err)
		}
		if n > 0 {
			holds = append(holds, fmt.Sprintf("%s: %d rows", t, n))
		}
	}
	return holds, nil
}
