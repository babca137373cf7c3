package pgaudit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/hearth-home/hearth/audit"
)

// VerifyOptions tune Verify and Export.
type VerifyOptions struct {
	// VerifierKey is the note verifier key every checkpoint must be signed
	// with. Empty: the key the database was bound to (state.verifier_key),
	// which whoever can write the database could have replaced too; the
	// result then carries a warning.
	VerifierKey string
	// Strict also parses every entry with audit.ParseEntry.
	Strict bool
}

// Verify checks the history in the database, in one read-only snapshot,
// streaming the entries in order (constant memory, server-side cursors):
// positions contiguous from 0; every entry's body in the event encoding
// (and canonical, with Strict); the Merkle tree recomputed from the
// entries against the stored hashes and against every checkpoint's root;
// every checkpoint's signature and origin; the last checkpoint covering
// every sequenced entry and matching the fencing row. Entries not yet
// sequenced are reported as Pending. The result is always non-nil; the
// error is an *audit.VerifyError when the history fails.
func Verify(ctx context.Context, pool *pgxpool.Pool, opts VerifyOptions) (*audit.VerifyResult, error) {
	return walk(ctx, pool, opts, nil)
}

// Export writes the history to a file log in <dir>/audit (which must not
// exist or be empty), verifying it as Verify does on the way: the same
// origin, entries, tree and checkpoints, which `hearth audit verify --dir
// DIR` then checks from the files. On failure the partial copy is removed.
func Export(ctx context.Context, pool *pgxpool.Pool, dir string, opts VerifyOptions) (*audit.VerifyResult, error) {
	adir := filepath.Join(dir, audit.DirName)
	if ents, err := os.ReadDir(adir); err == nil && len(ents) > 0 {
		return &audit.VerifyResult{Error: "exists"}, fmt.Errorf("pgaudit: export: %w in %s", audit.ErrExists, adir)
	}
	var x *audit.Exporter
	res, err := walk(ctx, pool, opts, func(vkey string) (sink, error) {
		var err error
		x, err = audit.NewExporter(dir, vkey)
		return x, err
	})
	if x != nil {
		if cerr := x.Close(); err == nil && cerr != nil {
			err = cerr
			res.OK, res.Error = false, cerr.Error()
		}
	}
	if err != nil && x != nil {
		os.RemoveAll(adir)
	}
	return res, err
}

// sink receives the history in order (an audit.Exporter).
type sink interface {
	Entry(event []byte) error
	Checkpoint(msg []byte) error
}

// fetchSize is how many rows each cursor fetches at a time.
const fetchSize = 1000

type cursor[T any] struct {
	tx   pgx.Tx
	name string
	scan func(pgx.CollectableRow) (T, error)
	buf  []T
	pos  int
	done bool
}

func (c *cursor[T]) next(ctx context.Context) (T, bool, error) {
	var zero T
	if c.pos == len(c.buf) {
		if c.done {
			return zero, false, nil
		}
		rows, err := c.tx.Query(ctx, fmt.Sprintf("FETCH %d FROM %s", fetchSize, c.name))
		if err != nil {
			return zero, false, err
		}
		if c.buf, err = pgx.AppendRows(c.buf[:0], rows, c.scan); err != nil {
			return zero, false, err
		}
		c.pos, c.done = 0, len(c.buf) < fetchSize
		if len(c.buf) == 0 {
			return zero, false, nil
		}
	}
	c.pos++
	return c.buf[c.pos-1], true, nil
}

type entryRow struct {
	seq  int64
	body []byte
}

type checkpointRow struct {
	size int64
	note []byte
}

type hashRow struct {
	idx  int64
	hash []byte
}

func bad(i int64, format string, args ...any) error {
	return &audit.VerifyError{Index: i, Err: fmt.Errorf(format, args...)}
}

// walk verifies the history; newSink, when set, is given the verifier key
// and returns where the history is copied as it is read.
func walk(ctx context.Context, pool *pgxpool.Pool, opts VerifyOptions, newSink func(vkey string) (sink, error)) (*audit.VerifyResult, error) {
	res := &audit.VerifyResult{}
	var prev int64
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		prev, err = verifyTx(ctx, tx, opts, res, newSink)
		return err
	})
	if err != nil {
		res.Entries, res.OK = prev, false
		var ve *audit.VerifyError
		if !errors.As(err, &ve) {
			ve = &audit.VerifyError{Index: -1, Err: err}
		}
		res.Error = ve.Err.Error()
		if ve.Index >= 0 {
			i := ve.Index
			res.FirstBadIndex = &i
		}
		return res, ve
	}
	res.OK = true
	return res, nil
}

// verifyTx does the work of walk in tx and returns the size of the last
// checkpoint that verified.
func verifyTx(ctx context.Context, tx pgx.Tx, opts VerifyOptions, res *audit.VerifyResult, newSink func(string) (sink, error)) (int64, error) {
	var size int64
	var origin, vkey *string
	if err := tx.QueryRow(ctx, "SELECT size, origin, verifier_key FROM "+Schema+".state").Scan(&size, &origin, &vkey); err != nil {
		return 0, fmt.Errorf("pgaudit: reading the history's state (is this hearth's database, migrated?): %w", err)
	}
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+Schema+".entries WHERE seq IS NULL").Scan(&res.Pending); err != nil {
		return 0, err
	}
	key := opts.VerifierKey
	if key == "" {
		if vkey == nil {
			return 0, errors.New("pgaudit: the database holds no audit history yet (no replica has opened it)")
		}
		key = *vkey
		res.Warnings = append(res.Warnings, "checked against the verifier key stored in the database; pass --key (the data dir's audit/log.pub) to check against a key kept elsewhere")
	}
	v, err := audit.ParseVerifierKey(key)
	if err != nil {
		return 0, err
	}
	res.Origin = v.Name()
	if origin != nil && *origin != v.Name() {
		return 0, bad(-1, "the database holds the history of log %q, not %q", *origin, v.Name())
	}
	verifiers := note.VerifierList(v)
	var out sink
	if newSink != nil {
		if out, err = newSink(key); err != nil {
			return 0, err
		}
	}
	for _, q := range []string{
		"DECLARE e NO SCROLL CURSOR FOR SELECT seq, body FROM " + Schema + ".entries WHERE seq IS NOT NULL ORDER BY seq",
		"DECLARE c NO SCROLL CURSOR FOR SELECT size, note FROM " + Schema + ".checkpoints ORDER BY size",
		"DECLARE h NO SCROLL CURSOR FOR SELECT idx, hash FROM " + Schema + ".hashes ORDER BY idx",
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return 0, err
		}
	}
	entries := &cursor[entryRow]{tx: tx, name: "e", scan: func(r pgx.CollectableRow) (entryRow, error) {
		var e entryRow
		return e, r.Scan(&e.seq, &e.body)
	}}
	cps := &cursor[checkpointRow]{tx: tx, name: "c", scan: func(r pgx.CollectableRow) (checkpointRow, error) {
		var c checkpointRow
		return c, r.Scan(&c.size, &c.note)
	}}
	hashes := &cursor[hashRow]{tx: tx, name: "h", scan: func(r pgx.CollectableRow) (hashRow, error) {
		var h hashRow
		return h, r.Scan(&h.idx, &h.hash)
	}}

	var fr audit.Frontier
	var scratch []tlog.Hash
	var line []byte
	var hidx int64
	prev := int64(0)
	diverged := int64(-1) // first entry whose stored hashes differ
	cp, haveCP, err := cps.next(ctx)
	if err != nil {
		return prev, err
	}
	for i := int64(0); ; i++ {
		e, ok, err := entries.next(ctx)
		if err != nil {
			return prev, err
		}
		if !ok {
			break
		}
		if e.seq != i {
			return prev, bad(i, "entry %d is missing (the next stored entry is %d): removed or renumbered", i, e.seq)
		}
		line, err = entryLine(line[:0], e.seq, e.body, opts.Strict)
		if err != nil {
			return prev, bad(i, "%v", err)
		}
		scratch = fr.Add(scratch[:0], line)
		for _, h := range scratch {
			sh, ok, err := hashes.next(ctx)
			if err != nil {
				return prev, err
			}
			if (!ok || sh.idx != hidx || !bytes.Equal(sh.hash, h[:])) && diverged < 0 {
				diverged = i
			}
			hidx++
		}
		if out != nil {
			if err := out.Entry(e.body); err != nil {
				return prev, bad(i, "%v", err)
			}
		}
		n := i + 1
		if !haveCP || cp.size != n {
			if haveCP && cp.size < n {
				return prev, bad(-1, "checkpoint of size %d is out of order", cp.size)
			}
			continue
		}
		c, err := audit.OpenCheckpoint(cp.note, verifiers)
		if err != nil {
			return prev, bad(-1, "checkpoint of size %d: %v", cp.size, err)
		}
		if c.Origin != v.Name() || c.Size != cp.size || c.Legacy {
			return prev, bad(-1, "checkpoint stored at size %d is for log %q at size %d", cp.size, c.Origin, c.Size)
		}
		root, err := fr.Root()
		if err != nil {
			return prev, err
		}
		if root != c.Hash {
			at := prev
			if diverged >= prev {
				at = diverged
			}
			return prev, bad(at, "the entries %d to %d do not give the root the checkpoint of size %d signed (changed, reordered or injected entries; first suspect: entry %d)", prev, n-1, n, at)
		}
		if diverged >= 0 {
			return prev, bad(-1, "the stored hashes of entry %d differ from those recomputed from the entries (the hashes table was changed)", diverged)
		}
		if out != nil {
			if err := out.Checkpoint(cp.note); err != nil {
				return prev, bad(-1, "%v", err)
			}
		}
		res.Checkpoints++
		res.Root = c.Hash.String()
		prev = n
		if cp, haveCP, err = cps.next(ctx); err != nil {
			return prev, err
		}
	}
	n := fr.Size()
	if haveCP {
		return prev, bad(n, "a checkpoint of size %d signs %d entries, only %d are stored (entries removed)", cp.size, cp.size, n)
	}
	if prev != n {
		return prev, bad(prev, "entries %d to %d are sequenced but no checkpoint covers them (injected entries)", prev, n-1)
	}
	if size != n {
		return prev, bad(-1, "the fencing row says %d entries, the history holds %d", size, n)
	}
	if _, extra, err := hashes.next(ctx); err != nil {
		return prev, err
	} else if extra {
		return prev, bad(-1, "stored hashes past the tree of %d entries (the hashes table was changed)", n)
	}
	res.Entries = n
	if n == 0 {
		res.Root = ""
	}
	return prev, nil
}

// entryLine checks an entry's body as read from the database (bytes a
// database writer could have put there) and appends its line.
func entryLine(dst []byte, seq int64, body []byte, strict bool) ([]byte, error) {
	if seq < 0 {
		return dst, fmt.Errorf("entry at negative position %d", seq)
	}
	if !audit.ValidEventBody(body) {
		return dst, fmt.Errorf("entry %d is not an event encoding", seq)
	}
	dst = audit.EntryLine(dst, seq, body)
	if strict {
		if _, err := audit.ParseEntry(dst); err != nil {
			return dst, fmt.Errorf("entry %d: %v", seq, err)
		}
	}
	return dst, nil
}
