package server

import (
	"errors"
	"net/http"
	"strings"

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
		{"store", func() error { return s.store.Ping(r.Context()) }},
		{"audit", func() error { return s.auditReady(r.Context()) }},
		{"ca", s.ca.Ready},
		{"feed", s.feedFresh},
		{"config", s.configFollowed},
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

// feedFresh fails when this replica has not heard from the store's change
// feed within its bound (1 s): its caches may then miss another
// replica's revocation (the parts fall back to the database meanwhile,
// but a replica that stays behind should not get new traffic). On bbolt
// the feed is always fresh.
func (s *Server) feedFresh() error {
	if !s.store.Feed().Fresh(s.opts.Now()) {
		return errFeedStale
	}
	return nil
}

var errFeedStale = errors.New("server: the store's change feed has not been heard from within its bound")
