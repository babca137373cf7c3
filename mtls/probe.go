package mtls

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/httpx"
)

// DefaultProbeAuditEvery is how often a probe route's requests are
// recorded (GatewayOptions.ProbeAuditEvery): a monitor polling every 10 s
// writes 144 entries a day instead of 8,640.
const DefaultProbeAuditEvery = 10 * time.Minute

// probeAudit records probes in aggregate: the first probe of a route in
// each window is one entry, carrying how many the previous window left out
// (meta similar_unrecorded). The map is bounded by the route table.
type probeAudit struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	left  map[string]int
}

func newProbeAudit(every time.Duration) *probeAudit {
	if every <= 0 {
		every = DefaultProbeAuditEvery
	}
	return &probeAudit{every: every, last: map[string]time.Time{}, left: map[string]int{}}
}

// take reports whether this probe of route is to be recorded, and how many
// were left out since the last recorded one.
func (p *probeAudit) take(route string, now time.Time) (record bool, unrecorded int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.last[route]; ok && now.Sub(t) < p.every && now.Sub(t) >= 0 {
		p.left[route]++
		return false, 0
	}
	unrecorded = p.left[route]
	p.last[route], p.left[route] = now, 0
	return true, unrecorded
}

// serveProbe forwards a liveness or readiness probe (a route with Probe
// set) without a credential: the agent gets neither the client's token
// nor a principal, and an empty scopes header. Probes are recorded in
// aggregate; if that entry cannot be written the answer is 503, as for
// every unrecorded decision.
func (g *Gateway) serveProbe(w http.ResponseWriter, r *http.Request, norm, route string, now time.Time, zone authz.Zone) {
	if record, unrecorded := g.probes.take(route, now); record {
		ev := audit.Event{
			Time:     now.UTC(),
			Name:     audit.EventAuthzDecision,
			Outcome:  audit.OutcomeAllow,
			Resource: norm,
			Reason:   "probe route " + route + " needs no credential (recorded once per " + g.probes.every.String() + ")",
			Client:   r.RemoteAddr,
			Meta:     map[string]string{"method": r.Method, "zone": string(zone), "probe": "true"},
		}
		if unrecorded > 0 {
			ev.Meta["similar_unrecorded"] = strconv.Itoa(unrecorded)
		}
		if err := g.audit.Record(r.Context(), ev); err != nil {
			g.log.Error().Err(err).Msg("mtls: audit record failed; refusing")
			httpx.Unavailable(w)
			return
		}
	}
	h := r.Header
	delete(h, "Authorization")
	delete(h, "Cookie")
	if g.agent.scopesHeader != "" {
		h[g.agent.scopesHeader] = []string{""}
	}
	r.Body, r.ContentLength = http.NoBody, 0
	setPath(r.URL, norm)
	g.proxy.ServeHTTP(w, r)
}
