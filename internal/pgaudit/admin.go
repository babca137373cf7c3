package pgaudit

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/hearth-home/hearth/audit"
)

// readTimeout bounds one read of the history for an HTTP request.
const readTimeout = 5 * time.Second

// AdminHandler serves audit.AdminPath from the PostgreSQL history, with
// the file log's parameters, bounds, errors and JSON (audit.ServeAdmin):
//
//	GET /.hearth/v1/admin/audit?n=50&event=auth.login&principal=user:alice&since=RFC3339&before=INDEX
//
// Each page is one query, LIMIT n, on the index of its filter (migration
// 0002). Any replica serves it. Entries name people and devices: the
// server mounts it behind hearth:admin.
func (l *Log) AdminHandler() http.Handler { return audit.ServeAdmin(l, l.log) }

// AdminState implements audit.AdminSource: the latest stored signed
// checkpoint and its size (0 and no note before the first batch).
func (l *Log) AdminState(ctx context.Context) (int64, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	c, msg, err := l.Latest(ctx)
	if err != nil {
		return 0, nil, err
	}
	return c.Size, msg, nil
}

// AdminEntries implements audit.AdminSource: the q.N newest sequenced
// entries below q.Before that match q, oldest first, in one query. The
// caller bounds q.Before by a checkpoint's size, so every entry returned
// is covered by a signed checkpoint.
func (l *Log) AdminEntries(ctx context.Context, q audit.AdminQuery) ([]audit.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	where := []string{"seq < $1"}
	args := []any{q.Before}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, cond+" $"+strconv.Itoa(len(args)))
	}
	if q.Event != "" {
		add("event =", q.Event)
	}
	if q.Principal != "" {
		add("principal =", q.Principal)
	}
	if !q.Since.IsZero() {
		add("at_ns >=", clampNanos(q.Since))
	}
	args = append(args, q.N)
	sql := "SELECT seq, body FROM " + Schema + ".entries WHERE " + strings.Join(where, " AND ") +
		" ORDER BY seq DESC LIMIT $" + strconv.Itoa(len(args))
	es, err := l.queryEntries(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	slices.Reverse(es)
	return es, nil
}

// Nanoseconds since 1970 UTC fit int64 from 1677-09-21 to 2262-04-11.
var (
	minNanos = time.Unix(0, math.MinInt64)
	maxNanos = time.Unix(0, math.MaxInt64)
)

// clampNanos is t in nanoseconds since 1970, clamped to int64 as
// migration 0002's trigger clamps at_ns: times after 2262-04-11 (which
// hearth's clock-stamped entries do not have) compare equal.
func clampNanos(t time.Time) int64 {
	switch {
	case t.Before(minNanos):
		return math.MinInt64
	case t.After(maxNanos):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// encoded is an event as stored: its body (audit.EncodeEvent) and the
// columns the admin reads filter on (migration 0002), filled here on
// insert; the trigger fills them only for rows inserted without them
// (hearth migrate's COPY), since parsing each body in PostgreSQL cost the
// append path a third of its throughput (BenchmarkAppendFields).
type encoded struct {
	body             []byte
	event, principal string
	at               int64
}

// encode encodes e as audit.EncodeEvent does, at now if e has no time.
func encode(e audit.Event, now time.Time) (encoded, error) {
	body, err := audit.EncodeEvent(e, now)
	if err != nil {
		return encoded{}, err
	}
	t := e.Time
	if t.IsZero() {
		t = now // as EncodeEvent stamps it
	}
	return encoded{body: body, event: e.Name, principal: e.Principal, at: clampNanos(t)}, nil
}

// newEntries are entries to insert, as insertSQL's arrays.
type newEntries struct {
	bodies             [][]byte
	events, principals []string
	at                 []int64
}

func (n *newEntries) add(x encoded) {
	n.bodies = append(n.bodies, x.body)
	n.events = append(n.events, x.event)
	n.principals = append(n.principals, x.principal)
	n.at = append(n.at, x.at)
}

func (n *newEntries) reset() {
	n.bodies, n.events, n.principals, n.at = n.bodies[:0], n.events[:0], n.principals[:0], n.at[:0]
}

func (n *newEntries) args() []any { return []any{n.bodies, n.events, n.principals, n.at} }

// queryEntries runs a SELECT seq, body and parses each row into an entry.
func (l *Log) queryEntries(ctx context.Context, sql string, args ...any) ([]audit.Entry, error) {
	rows, err := l.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("pgaudit: reading entries: %w", err)
	}
	var es []audit.Entry
	var seq int64
	var body, line []byte
	_, err = pgx.ForEachRow(rows, []any{&seq, &body}, func() error {
		if line, err = entryLine(line[:0], seq, body, false); err != nil {
			return err
		}
		e, err := audit.ParseEntry(line)
		if err != nil {
			return fmt.Errorf("entry %d: %w", seq, err)
		}
		es = append(es, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pgaudit: reading entries: %w", err)
	}
	return es, nil
}

// tailPage is how many entries one query of Tail reads.
const tailPage = 256

// Tail returns the last n entries covered by the latest checkpoint for
// which match returns true (all if match is nil), oldest first, as
// audit.Log.Tail does (the web UI reads the history with it). It reads
// the history newest first, tailPage entries per query, until it has n
// or reaches the start: memory is bounded by n and one page.
func (l *Log) Tail(n int, match func(audit.Entry) bool) ([]audit.Entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*readTimeout)
	defer cancel()
	size, _, err := l.AdminState(ctx)
	if err != nil {
		return nil, err
	}
	var out []audit.Entry
	for before := size; before > 0 && len(out) < n; {
		es, err := l.queryEntries(ctx, "SELECT seq, body FROM "+Schema+".entries WHERE seq < $1 AND seq >= $2 ORDER BY seq DESC",
			before, max(before-tailPage, 0))
		if err != nil {
			return nil, err
		}
		if int64(len(es)) != min(before, tailPage) {
			return nil, fmt.Errorf("pgaudit: entries below %d are missing", before)
		}
		for _, e := range es {
			if len(out) < n && (match == nil || match(e)) {
				out = append(out, e)
			}
		}
		before -= int64(len(es))
	}
	slices.Reverse(out)
	return out, nil
}

// ProveInclusion proves, from the stored hashes, that the tree of size
// entries holds entry index (RFC 6962 section 2.1.1); 0 <= index < size
// <= the history's size.
func (l *Log) ProveInclusion(index, size int64) (*audit.InclusionProof, error) {
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	defer cancel()
	cur, err := l.treeSize(ctx)
	if err != nil {
		return nil, err
	}
	if index < 0 || index >= size || size > cur {
		return nil, fmt.Errorf("pgaudit: no inclusion proof of entry %d in a tree of %d (the log has %d)", index, size, cur)
	}
	p, err := tlog.ProveRecord(size, index, l.hashReader(ctx))
	if err != nil {
		return nil, fmt.Errorf("pgaudit: %w", err)
	}
	if p == nil {
		p = tlog.RecordProof{}
	}
	return &audit.InclusionProof{Index: index, Size: size, Proof: p}, nil
}

// treeSize is how many entries the stored tree (and its latest
// checkpoint, written in the same transaction) has.
func (l *Log) treeSize(ctx context.Context) (int64, error) {
	var n int64
	if err := l.pool.QueryRow(ctx, "SELECT size FROM "+Schema+".state").Scan(&n); err != nil {
		return 0, fmt.Errorf("pgaudit: %w", err)
	}
	return n, nil
}

// hashReader reads the stored hashes for tlog's proofs and tiles.
func (l *Log) hashReader(ctx context.Context) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return readHashes(ctx, l.pool, idx)
	})
}

// serveProof answers audit.ProofPath as the file log does (audit.ServeProof).
func (l *Log) serveProof(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	size, _, err := l.AdminState(ctx)
	if err != nil {
		l.unavailable(w, r, err)
		return
	}
	audit.ServeProof(w, r, size, l.log, l.ProveInclusion, l.ProveConsistency)
}

var _ audit.AdminSource = (*Log)(nil)
