package audit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"filippo.io/torchwood"
	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/hearth-home/hearth/internal/httpx"
)

// Paths the Handler serves.
const (
	CheckpointPath = "/.hearth/v1/audit/checkpoint"
	ProofPath      = "/.hearth/v1/audit/proof"
	// TilePrefix starts the c2sp.org/tlog-tiles paths: TilePrefix+"<L>/<N>[.p/<W>]"
	// and TilePrefix+"entries/<N>[.p/<W>]". The log's tlog-tiles prefix URL
	// is the directory of CheckpointPath, /.hearth/v1/audit/.
	TilePrefix = "/.hearth/v1/audit/tile/"
)

// Handler serves the log as a c2sp.org/tlog-tiles v0.1.0 log under the
// prefix /.hearth/v1/audit/, and its proofs, for any enrolled device to keep
// checkpoints, check that the log only grows, and read it:
//
//	GET /.hearth/v1/audit/checkpoint              the latest signed checkpoint, with any witness cosignatures of it
//	GET /.hearth/v1/audit/tile/<L>/<N>[.p/<W>]    a Merkle tree tile (tlog-tiles paths: x001/234 for 1234)
//	GET /.hearth/v1/audit/tile/entries/<N>[.p/<W>] an entry bundle: each entry, 2-byte length first
//	GET /.hearth/v1/audit/proof?index=N&size=M    InclusionProof (JSON)
//	GET /.hearth/v1/audit/proof?old=N&size=M      ConsistencyProof (JSON)
//
// Bad parameters get 400, other paths 404, other methods 405, all as JSON
// errors. Entries themselves are not served here. The handler does not
// authenticate: the server mounts it behind its authentication.
func (l *Log) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch RouteHistory(w, r) {
		case HistoryTile:
			l.serveTile(w, r)
		case HistoryCheckpoint:
			WriteCheckpoint(w, l.cosignedCheckpoint(l.Checkpoint()))
		case HistoryProof:
			l.serveProof(w, r)
		}
	})
}

// HistoryEndpoint names what a request to the history's read endpoints
// asks for.
type HistoryEndpoint int

// The history's read endpoints; HistoryNone means RouteHistory has
// answered the request already (404 or 405).
const (
	HistoryNone HistoryEndpoint = iota
	HistoryCheckpoint
	HistoryTile
	HistoryProof
)

// RouteHistory sorts a request to the history's read endpoints (the
// checkpoint, tiles, proofs), answering other paths with 404 and other
// methods than GET and HEAD with 405 (JSON errors), as both the file log
// and the PostgreSQL history (internal/pgaudit) serve them.
func RouteHistory(w http.ResponseWriter, r *http.Request) HistoryEndpoint {
	var e HistoryEndpoint
	switch {
	case r.URL.Path == CheckpointPath:
		e = HistoryCheckpoint
	case r.URL.Path == ProofPath:
		e = HistoryProof
	case strings.HasPrefix(r.URL.Path, TilePrefix):
		e = HistoryTile
	default:
		httpx.Error(w, http.StatusNotFound, "not_found", "no such audit endpoint")
		return HistoryNone
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httpx.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		return HistoryNone
	}
	return e
}

// WriteCheckpoint answers with a signed checkpoint note (never cached: it
// moves with every batch).
func WriteCheckpoint(w http.ResponseWriter, msg []byte) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(msg)
}

func (l *Log) serveProof(w http.ResponseWriter, r *http.Request) {
	ServeProof(w, r, l.Size(), l.log, l.ProveInclusion, l.ProveConsistency)
}

// ProofQuery is a parsed ProofPath query: an inclusion proof of Index
// (Consistency false) or a consistency proof from Old, in the tree of Size.
type ProofQuery struct {
	Index, Old, Size int64
	Consistency      bool
}

// ParseProofQuery parses and bounds a ProofPath query against a log of
// size entries (its latest checkpoint). The error is a sentence for the
// client (400 bad_request).
func ParseProofQuery(rawQuery string, size int64) (ProofQuery, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return ProofQuery{}, errors.New("malformed query")
	}
	get := func(name string) (int64, bool, bool) {
		vs, ok := q[name]
		if !ok {
			return 0, false, true
		}
		if len(vs) != 1 {
			return 0, true, false
		}
		n, ok := parseCanonicalInt(vs[0])
		return n, true, ok
	}
	for k := range q {
		if k != "index" && k != "old" && k != "size" {
			return ProofQuery{}, errors.New("unknown parameter " + k + "; use index&size or old&size")
		}
	}
	index, hasIndex, ok1 := get("index")
	old, hasOld, ok2 := get("old")
	want, hasSize, ok3 := get("size")
	if !ok1 || !ok2 || !ok3 || !hasSize || hasIndex == hasOld {
		return ProofQuery{}, errors.New("want index=N&size=M or old=N&size=M, each once, in canonical decimal")
	}
	if want < 1 || want > size {
		return ProofQuery{}, errors.New("size must be between 1 and the latest checkpoint's size")
	}
	if hasIndex && index >= want {
		return ProofQuery{}, errors.New("index must be below size")
	}
	if hasOld && (old < 1 || old > want) {
		return ProofQuery{}, errors.New("old must be between 1 and size")
	}
	return ProofQuery{Index: index, Old: old, Size: want, Consistency: hasOld}, nil
}

// ServeProof answers a ProofPath request for a log of size entries with
// the proof inclusion or consistency computes, or a JSON error: 400 for
// bad parameters (ParseProofQuery), 503 when the proof cannot be computed.
// The file log and the PostgreSQL history (internal/pgaudit) both serve
// their proofs with it.
func ServeProof(w http.ResponseWriter, r *http.Request, size int64, log zerolog.Logger,
	inclusion func(index, size int64) (*InclusionProof, error), consistency func(old, size int64) (*ConsistencyProof, error)) {
	pq, err := ParseProofQuery(r.URL.RawQuery, size)
	if err != nil {
		httpx.Error(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	var p any
	if pq.Consistency {
		p, err = consistency(pq.Old, pq.Size)
	} else {
		p, err = inclusion(pq.Index, pq.Size)
	}
	if err != nil {
		log.Error().Err(err).Bool("consistency", pq.Consistency).Msg("audit: computing a proof")
		httpx.Error(w, http.StatusServiceUnavailable, "unavailable", "the proof cannot be computed now")
		return
	}
	httpx.JSON(w, http.StatusOK, p)
}

// AdminPath is the path AdminHandler serves.
const AdminPath = "/.hearth/v1/admin/audit"

// maxAdminEntries bounds one page of AdminHandler.
const maxAdminEntries = 1000

// AdminEntries is the answer of AdminHandler: the newest matching entries,
// oldest first, and the log's size and latest signed checkpoint.
type AdminEntries struct {
	Entries    []Entry `json:"entries"`
	Size       int64   `json:"size"`
	Checkpoint string  `json:"checkpoint"`
}

// AdminQuery is a parsed AdminPath query: the N newest entries with
// index below Before that match Event, Principal (exactly, when not empty)
// and Since (time at or after it, when not zero).
type AdminQuery struct {
	N                int
	Before           int64
	Since            time.Time
	Event, Principal string
}

// Match reports whether e passes q's filters (not N or Before).
func (q AdminQuery) Match(e Entry) bool {
	return (q.Event == "" || e.Name == q.Event) && (q.Principal == "" || e.Principal == q.Principal) &&
		(q.Since.IsZero() || !e.Time.Before(q.Since))
}

// ParseAdminQuery parses and bounds an AdminPath query against a log of
// size entries: n 1 to 1000 (default 50), before at most size (default
// size), since in RFC 3339, each parameter at most once. The error is a
// sentence for the client (400 bad_request).
func ParseAdminQuery(rawQuery string, size int64) (AdminQuery, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return AdminQuery{}, errors.New("malformed query")
	}
	aq := AdminQuery{N: 50, Before: size}
	for k, vs := range q {
		if len(vs) != 1 {
			return AdminQuery{}, errors.New("parameter " + k + " given more than once")
		}
		v, ok := vs[0], true
		switch k {
		case "n":
			var n int64
			n, ok = parseCanonicalInt(v)
			ok = ok && n >= 1 && n <= maxAdminEntries
			aq.N = int(n)
		case "before":
			aq.Before, ok = parseCanonicalInt(v)
			aq.Before = min(aq.Before, size)
		case "since":
			aq.Since, err = time.Parse(time.RFC3339Nano, v)
			ok = err == nil
		case "event":
			aq.Event = v
		case "principal":
			aq.Principal = v
		default:
			ok = false
		}
		if !ok {
			return AdminQuery{}, errors.New("bad parameter " + k + "; use n (1-1000), before (index), since (RFC 3339), event, principal")
		}
	}
	return aq, nil
}

// AdminSource is what an AdminPath handler reads: the file log, or the
// PostgreSQL history of replicas (internal/pgaudit).
type AdminSource interface {
	// AdminState returns the size the answer is of and the latest signed
	// checkpoint note.
	AdminState(ctx context.Context) (size int64, checkpoint []byte, err error)
	// AdminEntries returns the q.N newest entries below q.Before that
	// q.Match, oldest first.
	AdminEntries(ctx context.Context, q AdminQuery) ([]Entry, error)
}

// ServeAdmin serves AdminPath from src (see Log.AdminHandler); log gets
// read failures, answered 503.
func ServeAdmin(src AdminSource, log zerolog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != AdminPath {
			httpx.Error(w, http.StatusNotFound, "not_found", "no such audit endpoint")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			httpx.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
			return
		}
		size, msg, err := src.AdminState(r.Context())
		if err != nil {
			log.Error().Err(err).Msg("audit: reading the latest checkpoint")
			httpx.Error(w, http.StatusServiceUnavailable, "unavailable", "the audit log cannot be read now")
			return
		}
		q, err := ParseAdminQuery(r.URL.RawQuery, size)
		if err != nil {
			httpx.Error(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		es, err := src.AdminEntries(r.Context(), q)
		if err != nil {
			log.Error().Err(err).Msg("audit: reading entries")
			httpx.Error(w, http.StatusServiceUnavailable, "unavailable", "the audit log cannot be read now")
			return
		}
		if es == nil {
			es = []Entry{}
		}
		httpx.JSON(w, http.StatusOK, AdminEntries{Entries: es, Size: size, Checkpoint: string(msg)})
	})
}

// AdminHandler serves the entries themselves, for the web UI's audit page:
//
//	GET /.hearth/v1/admin/audit?n=50&event=auth.login&principal=user:alice&since=RFC3339&before=INDEX
//
// n (default 50, at most 1000) newest entries matching the filters, with
// index below before (for paging back). Entries name people and devices:
// the server must mount this behind the hearth:admin capability.
func (l *Log) AdminHandler() http.Handler { return ServeAdmin(fileAdmin{l}, l.log) }

// fileAdmin is the file log as an AdminSource.
type fileAdmin struct{ l *Log }

func (f fileAdmin) AdminState(context.Context) (int64, []byte, error) {
	_, msg := f.l.Checkpoint()
	return f.l.Size(), msg, nil
}

func (f fileAdmin) AdminEntries(_ context.Context, q AdminQuery) ([]Entry, error) {
	return tailEntries(f.l.adir, q.Before, q.N, q.Match)
}

// parseTilePath parses the part of a tile URL after TilePrefix's "tile/"
// ("tile/1/x001/234.p/7", "tile/entries/000"), strictly: only the
// canonical c2sp.org/tlog-tiles spelling, tile height 8, levels 0 to 7
// (2^64 leaves) or entries.
func parseTilePath(p string) (tlog.Tile, error) {
	t, err := torchwood.ParseTilePath(p)
	if err != nil {
		return tlog.Tile{}, err
	}
	if t.H != torchwood.TileHeight || t.L < -1 || t.L > 7 || t.N < 0 || t.W < 1 || t.W > torchwood.TileWidth || torchwood.TilePath(t) != p {
		return tlog.Tile{}, fmt.Errorf("malformed tile path %q", p)
	}
	return t, nil
}

// tileInTree reports whether tile t exists in a tree of size entries.
func tileInTree(t tlog.Tile, size int64) bool {
	level := max(t.L, 0) * t.H
	first := t.N * torchwood.TileWidth
	if first > (1<<62)>>level {
		return false
	}
	return (first+int64(t.W))<<level <= size
}

func (l *Log) serveTile(w http.ResponseWriter, r *http.Request) {
	t, err := parseTilePath(strings.TrimPrefix(r.URL.Path, TilePrefix[:len(TilePrefix)-len("tile/")]))
	if err != nil || r.URL.RawQuery != "" {
		httpx.Error(w, http.StatusNotFound, "not_found", "no such tile (c2sp.org/tlog-tiles paths: tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>])")
		return
	}
	size := l.Size()
	if !tileInTree(t, size) {
		httpx.Error(w, http.StatusNotFound, "not_found", "the tree has no such tile yet")
		return
	}
	var data []byte
	if t.L >= 0 {
		data, err = tlog.ReadTileData(t, hashFile{l.hashes})
	} else {
		data, err = l.entryBundle(t)
	}
	if err != nil {
		l.log.Error().Err(err).Str("tile", r.URL.Path).Msg("audit: reading a tile")
		httpx.Error(w, http.StatusServiceUnavailable, "unavailable", "the tile cannot be read now")
		return
	}
	WriteTile(w, t, data)
}

// WriteTile answers a tile request with the tile's bytes: full tiles are
// immutable (c2sp.org/tlog-tiles) and may be cached, by the client only
// (entries are private household data); partial ones are not cached. The
// PostgreSQL history (internal/pgaudit) serves its tiles through it too.
func WriteTile(w http.ResponseWriter, t tlog.Tile, data []byte) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if t.W == torchwood.TileWidth {
		w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.Write(data)
}
