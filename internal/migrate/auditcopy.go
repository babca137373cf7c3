package migrate

import (
	"bytes"
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/pgaudit"
)

// AuditCounts is what the audit area holds.
type AuditCounts struct {
	// Entries covered by the final signed checkpoint: all of them move.
	Entries int64 `json:"entries"`
	// Checkpoints moved (the framed segments' signed checkpoints).
	Checkpoints int `json:"checkpoints"`
	// Root is the final checkpoint's tree hash; Origin the log's name.
	Root   string `json:"root"`
	Origin string `json:"origin"`
	// Unsigned counts entries past the final checkpoint, left by a crash
	// and never acknowledged: they do not move (the file log's next start
	// would discard them too).
	Unsigned int64 `json:"unsigned,omitempty"`
}

// auditBatch is how many entries go to PostgreSQL per COPY (with their
// hashes and the checkpoints among them: three COPYs per batch).
const auditBatch = 2048

// body is the event encoding of an entry line: the line without its
// leading {"index":N, (audit.EntryLine(nil, index, body) gives the line
// back), which is what pgaudit stores.
func body(index int64, line []byte) ([]byte, error) {
	prefix := strconv.AppendInt([]byte(`{"index":`), index, 10)
	prefix = append(prefix, ',')
	if !bytes.HasPrefix(line, prefix) {
		return nil, fmt.Errorf("migrate: audit entry %d does not start with its index", index)
	}
	b := append([]byte{'{'}, line[len(prefix):]...)
	if !bytes.Equal(audit.EntryLine(nil, index, b), line) || !audit.ValidEventBody(b) {
		return nil, fmt.Errorf("migrate: audit entry %d is not in the event encoding", index)
	}
	return b, nil
}

// countAudit verifies the file log of dir (audit.Verify) and counts what
// would move.
func countAudit(dir string) (AuditCounts, error) {
	var c AuditCounts
	res, err := audit.WalkHistory(dir, audit.VerifyOptions{}, func(int64, []byte) error { return nil }, func(audit.Checkpoint, []byte) error {
		c.Checkpoints++
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("migrate: the audit log of %s does not verify (run `hearth audit verify --dir %s` for details; nothing moves until it does): %w", dir, dir, err)
	}
	c.Entries, c.Root, c.Origin = res.Entries, res.Root, res.Origin
	if res.Unsigned != nil {
		c.Unsigned = res.Unsigned.Entries
	}
	return c, nil
}

// copyAudit moves the verified file log of dir into pgaudit's tables in
// one transaction: every entry at its own index (seq), the tree's stored
// hashes, every signed checkpoint as the file log holds it, and the
// fencing row's size and the log's origin and verifier key, so that the
// replicas' sequencer continues the same history at the next index. Before
// committing it reads the entries back from the transaction, recomputes
// the tree and compares its head with the file log's final checkpoint, and
// the tree head of the stored hashes too; on any difference nothing is
// committed.
func copyAudit(ctx context.Context, pool *pgxpool.Pool, dir string, want AuditCounts, progress func(format string, args ...any)) error {
	signer, err := audit.LoadSigner(dir)
	if err != nil {
		return fmt.Errorf("migrate: the audit keys of %s: %w", dir, err)
	}
	if err := pgaudit.Migrate(ctx, pool); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var size int64
		var n int64
		if err := tx.QueryRow(ctx, "SELECT size FROM "+pgaudit.Schema+".state FOR UPDATE").Scan(&size); err != nil {
			return fmt.Errorf("migrate: the audit history's state: %w", err)
		}
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+pgaudit.Schema+".entries").Scan(&n); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if size != 0 || n != 0 {
			return fmt.Errorf("%w: the audit history already has %d entries", ErrNotEmpty, max(size, n))
		}
		fr, err := audit.NewFrontier(0, nil)
		if err != nil {
			return err
		}
		var (
			entries [][]any
			hashes  [][]any
			cps     [][]any
			fresh   []tlog.Hash
			got     AuditCounts
			last    audit.Checkpoint
		)
		flush := func() error {
			if len(entries) > 0 {
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{pgaudit.Schema, "entries"}, []string{"seq", "body"}, pgx.CopyFromRows(entries)); err != nil {
					return fmt.Errorf("migrate: writing audit entries: %w", err)
				}
			}
			if len(hashes) > 0 {
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{pgaudit.Schema, "hashes"}, []string{"idx", "hash"}, pgx.CopyFromRows(hashes)); err != nil {
					return fmt.Errorf("migrate: writing audit hashes: %w", err)
				}
			}
			if len(cps) > 0 {
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{pgaudit.Schema, "checkpoints"}, []string{"size", "note", "epoch"}, pgx.CopyFromRows(cps)); err != nil {
					return fmt.Errorf("migrate: writing audit checkpoints: %w", err)
				}
			}
			entries, hashes, cps = entries[:0], hashes[:0], cps[:0]
			return nil
		}
		_, err = audit.WalkHistory(dir, audit.VerifyOptions{VerifierKey: signer.VerifierKey()}, func(i int64, line []byte) error {
			b, err := body(i, line)
			if err != nil {
				return err
			}
			base := tlog.StoredHashCount(i)
			fresh = fr.Add(fresh[:0], line)
			for k, h := range fresh {
				hashes = append(hashes, []any{base + int64(k), bytes.Clone(h[:])})
			}
			entries = append(entries, []any{i, b})
			got.Entries++
			if len(entries) >= auditBatch {
				if err := flush(); err != nil {
					return err
				}
				if got.Entries%(16*auditBatch) == 0 {
					progress("audit: %d of %d entries copied", got.Entries, want.Entries)
				}
			}
			return nil
		}, func(c audit.Checkpoint, msg []byte) error {
			cps = append(cps, []any{c.Size, bytes.Clone(msg), int64(0)})
			got.Checkpoints++
			last = c
			return nil
		})
		if err != nil {
			return fmt.Errorf("migrate: reading the audit log: %w", err)
		}
		if err := flush(); err != nil {
			return err
		}
		if got.Entries > 0 && last.Size != got.Entries {
			return fmt.Errorf("%w: audit: the last current-form checkpoint covers %d of %d entries (a log with only legacy checkpoints: start and stop `hearth serve` once, which signs a current one, then migrate)", ErrMismatch, last.Size, got.Entries)
		}
		if _, err := tx.Exec(ctx, "UPDATE "+pgaudit.Schema+".state SET size = $1, origin = $2, verifier_key = $3", got.Entries, signer.Origin(), signer.VerifierKey()); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if err := checkAuditTx(ctx, tx, want, got, last); err != nil {
			return err
		}
		progress("audit: %d entries and %d checkpoints copied; tree head %s matches the file log's", got.Entries, got.Checkpoints, last.Hash)
		return nil
	})
}

// checkAuditTx compares, inside the import's transaction, what the
// database now holds with the file log: the counts, the tree recomputed
// from the entries as stored (positions contiguous from 0) and the tree
// head of the stored hashes, both against the final checkpoint.
func checkAuditTx(ctx context.Context, tx pgx.Tx, want, got AuditCounts, last audit.Checkpoint) error {
	if got.Entries != want.Entries || got.Checkpoints != want.Checkpoints {
		return fmt.Errorf("%w: audit: %d entries and %d checkpoints read, %d and %d counted before (did the log change?)", ErrMismatch, got.Entries, got.Checkpoints, want.Entries, want.Checkpoints)
	}
	var nEntries, nCheckpoints, nHashes int64
	if err := tx.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+pgaudit.Schema+".entries), (SELECT count(*) FROM "+pgaudit.Schema+".checkpoints), (SELECT count(*) FROM "+pgaudit.Schema+".hashes)").Scan(&nEntries, &nCheckpoints, &nHashes); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if nEntries != want.Entries || nCheckpoints != int64(want.Checkpoints) || nHashes != tlog.StoredHashCount(want.Entries) {
		return fmt.Errorf("%w: audit: the database holds %d entries, %d checkpoints and %d stored hashes; the file log %d, %d and %d", ErrMismatch, nEntries, nCheckpoints, nHashes, want.Entries, want.Checkpoints, tlog.StoredHashCount(want.Entries))
	}
	if want.Entries == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, "SELECT seq, body FROM "+pgaudit.Schema+".entries ORDER BY seq")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	fr, _ := audit.NewFrontier(0, nil)
	var (
		seq  int64
		b    []byte
		line []byte
		hs   []tlog.Hash
	)
	_, err = pgx.ForEachRow(rows, []any{&seq, &b}, func() error {
		if seq != fr.Size() {
			return fmt.Errorf("%w: audit: entry %d is stored at position %d", ErrMismatch, fr.Size(), seq)
		}
		line = audit.EntryLine(line[:0], seq, b)
		hs = fr.Add(hs[:0], line)
		return nil
	})
	if err != nil {
		return err
	}
	root, err := fr.Root()
	if err != nil {
		return err
	}
	if root != last.Hash || fr.Size() != last.Size {
		return fmt.Errorf("%w: audit: the stored entries give tree head %s at %d, the file log's checkpoint %s at %d", ErrMismatch, root, fr.Size(), last.Hash, last.Size)
	}
	stored, err := tlog.TreeHash(want.Entries, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return pgaudit.ReadHashes(ctx, tx, idx)
	}))
	if err != nil {
		return fmt.Errorf("migrate: audit: reading the stored hashes back: %w", err)
	}
	if stored != last.Hash {
		return fmt.Errorf("%w: audit: the stored hashes give tree head %s, the file log's checkpoint %s", ErrMismatch, stored, last.Hash)
	}
	return nil
}

// clearAudit empties pgaudit's tables again: the undo of a copyAudit into
// an empty history.
func clearAudit(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		s := pgaudit.Schema
		_, err := tx.Exec(ctx, "DELETE FROM "+s+".entries; DELETE FROM "+s+".hashes; DELETE FROM "+s+".checkpoints; UPDATE "+s+".state SET size = 0, epoch = 0, origin = NULL, verifier_key = NULL")
		return err
	})
}
