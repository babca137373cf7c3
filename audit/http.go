package audit

import (
	"net/http"
	"net/url"
	"time"

	"github.com/hearth-home/hearth/internal/httpx"
)

// Paths the Handler serves.
const (
	CheckpointPath = "/.hearth/v1/audit/checkpoint"
	ProofPath      = "/.hearth/v1/audit/proof"
)

// Handler serves the log's public proofs, for any enrolled device to keep
// checkpoints and check that the log only grows:
//
//	GET /.hearth/v1/audit/checkpoint              the latest signed checkpoint (text/plain)
//	GET /.hearth/v1/audit/proof?index=N&size=M    InclusionProof (JSON)
//	GET /.hearth/v1/audit/proof?old=N&size=M      ConsistencyProof (JSON)
//
// Bad parameters get 400, other paths 404, other methods 405, all as JSON
// errors. Entries themselves are not served here. The handler does not
// authenticate: the server mounts it behind its authentication.
func (l *Log) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case CheckpointPath, ProofPath:
		default:
			httpx.Error(w, http.StatusNotFound, "not_found", "no such audit endpoint")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			httpx.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
			return
		}
		if r.URL.Path == CheckpointPath {
			_, msg := l.Checkpoint()
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
