package audit

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"filippo.io/torchwood"
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
		isTile := strings.HasPrefix(r.URL.Path, TilePrefix)
		switch {
		case r.URL.Path == CheckpointPath, r.URL.Path == ProofPath, isTile:
		default:
			httpx.Error(w, http.StatusNotFound, "not_found", "no such audit endpoint")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			httpx.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
			return
		}
		if isTile {
			l.serveTile(w, r)
			return
		}
		if r.URL.Path == CheckpointPath {
			msg := l.cosignedCheckpoint(l.Checkpoint())
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Write(msg)
			return
		}
		l.serveProof(w, r)
	})
}

func (l *Log) serveProof(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		httpx.Error(w, http.StatusBadRequest, "bad_request", "malformed query")
		return
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
			httpx.Error(w, http.StatusBadRequest, "bad_request", "unknown parameter "+k+"; use index&size or old&size")
			return
		}
	}
	index, hasIndex, ok1 := get("index")
	old, hasOld, ok2 := get("old")
	size, hasSize, ok3 := get("size")
	if !ok1 || !ok2 || !ok3 || !hasSize || hasIndex == hasOld {
		httpx.Error(w, http.StatusBadRequest, "bad_request", "want index=N&size=M or old=N&size=M, each once, in canonical decimal")
		return
	}
	cur := l.Size()
	if size < 1 || size > cur {
		httpx.Error(w, http.StatusBadRequest, "bad_request", "size must be between 1 and the latest checkpoint's size")
		return
	}
	if hasIndex {
		if index >= size {
			httpx.Error(w, http.StatusBadRequest, "bad_request", "index must be below size")
			return
		}
		p, err := l.ProveInclusion(index, size)
		if err != nil {
			l.log.Error().Err(err).Msg("audit: inclusion proof")
			httpx.Error(w, http.StatusServiceUnavailable, "unavailable", "the proof cannot be computed now")
			return
		}
		httpx.JSON(w, http.StatusOK, p)
		return
	}
	if old < 1 || old > size {
		httpx.Error(w, http.StatusBadRequest, "bad_request", "old must be between 1 and size")
		return
	}
	p, err := l.ProveConsistency(old, size)
	if err != nil {
		l.log.Error().Err(err).Msg("audit: consistency proof")
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

// AdminHandler serves the entries themselves, for the web UI's audit page:
//
//	GET /.hearth/v1/admin/audit?n=50&event=auth.login&principal=user:alice&since=RFC3339&before=INDEX
//
// n (default 50, at most 1000) newest entries matching the filters, with
// index below before (for paging back). Entries name people and devices:
// the server must mount this behind the hearth:admin capability.
func (l *Log) AdminHandler() http.Handler {
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
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			httpx.Error(w, http.StatusBadRequest, "bad_request", "malformed query")
			return
		}
		n, size := int64(50), l.Size()
		before := size
		var since time.Time
		for k, vs := range q {
			if len(vs) != 1 {
				httpx.Error(w, http.StatusBadRequest, "bad_request", "parameter "+k+" given more than once")
				return
			}
			v, ok := vs[0], true
			switch k {
			case "n":
				n, ok = parseCanonicalInt(v)
				ok = ok && n >= 1 && n <= maxAdminEntries
			case "before":
				before, ok = parseCanonicalInt(v)
				before = min(before, size)
			case "since":
				since, err = time.Parse(time.RFC3339Nano, v)
				ok = err == nil
			case "event", "principal":
			default:
				ok = false
			}
			if !ok {
				httpx.Error(w, http.StatusBadRequest, "bad_request", "bad parameter "+k+"; use n (1-1000), before (index), since (RFC 3339), event, principal")
				return
			}
		}
		event, principal := q.Get("event"), q.Get("principal")
		es, err := tailEntries(l.adir, before, int(n), func(e Entry) bool {
			return (event == "" || e.Name == event) && (principal == "" || e.Principal == principal) &&
				(since.IsZero() || !e.Time.Before(since))
		})
		if err != nil {
			l.log.Error().Err(err).Msg("audit: reading entries")
			httpx.Error(w, http.StatusServiceUnavailable, "unavailable", "the audit log cannot be read now")
			return
		}
		if es == nil {
			es = []Entry{}
		}
		_, msg := l.Checkpoint()
		httpx.JSON(w, http.StatusOK, AdminEntries{Entries: es, Size: size, Checkpoint: string(msg)})
	})
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
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if t.W == torchwood.TileWidth {
		// Full tiles are immutable (tlog-tiles); entries are private.
		w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.Write(data)
}
