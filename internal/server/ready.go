package server

import (
	"net/http"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/internal/httpx"
)

// readyz answers GET /.hearth/readyz without authentication: 200 when the
// store, the audit log and the CA all work, else 503 naming the failing
// parts. The causes go to the log only: an anonymous caller learns which
// part fails, not paths or errors.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httpx.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		return
	}
	checks := map[string]string{}
	var failing []string
	for _, c := range []struct {
		name string
		f    func() error
	}{
		{"store", func() error { return s.db.View(func(*bolt.Tx) error { return nil }) }},
		{"audit", s.audit.Err},
		{"ca", s.ca.Ready},
	} {
		if err := c.f(); err != nil {
			s.log.Warn().Err(err).Str("part", c.name).Msg("readyz: not ready")
			checks[c.name] = "failing"
			failing = append(failing, c.name)
			continue
		}
		checks[c.name] = "ok"
	}
	if len(failing) > 0 {
		httpx.JSON(w, http.StatusServiceUnavailable, map[string]any{
			"error":   "not ready: " + strings.Join(failing, ", ") + " failing (see the server's log)",
			"code":    "not_ready",
			"failing": failing,
			"checks":  checks,
		})
		return
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"status": "ready", "checks": checks})
}
