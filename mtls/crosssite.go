package mtls

import (
	"net/http"
	"strings"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/httpx"
)

// A client certificate is ambient authority: once a browser holds one, it
// presents it on every request to the gateway's host, whichever site's page
// made the request — a cookie without SameSite. So a state-changing request
// that another site started is refused when it comes with a client
// certificate, whatever path it is for (the agent's or hearth's own). This
// follows the OWASP CSRF Prevention Cheat Sheet ("Fetch Metadata" and
// "Verifying Origin With Standard Headers"): Sec-Fetch-Site when the browser
// sends it, else Origin (RFC 6454 §7); a request with neither is not from a
// modern browser's cross-site form or script (a CLI, curl, `hearth enroll`),
// and goes on. Safe methods (RFC 9110 §9.2.1) are not refused: websocket
// upgrades are checked by the agent route's own Origin rule.

// crossSiteMaxOrigin bounds the Origin value recorded in the audit entry.
const crossSiteMaxOrigin = 256

// isCrossSite reports whether r, an unsafe request, was started by another
// origin than the gateway's own (https://<Host>).
func isCrossSite(r *http.Request) bool {
	if v := r.Header.Values("Sec-Fetch-Site"); len(v) > 0 {
		if len(v) != 1 {
			return true
		}
		// "none": the user started it (typed URL, bookmark).
		return v[0] != "same-origin" && v[0] != "none"
	}
	o := r.Header.Values("Origin")
	if len(o) == 0 {
		return false
	}
	if len(o) != 1 || r.Host == "" {
		return true
	}
	scheme := "https://"
	if r.TLS == nil {
		scheme = "http://"
	}
	return !strings.EqualFold(o[0], scheme+r.Host) // also "null"
}

func isSafeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// refuseCrossSite answers 403 (code cross_site) to an unsafe cross-site
// request that carries a client certificate, after recording the refusal
// (503 if it cannot be recorded), and reports whether it answered.
func (g *Gateway) refuseCrossSite(w http.ResponseWriter, r *http.Request, norm string, cred credential) bool {
	if cred.cert == nil || isSafeMethod(r.Method) || !isCrossSite(r) {
		return false
	}
	origin := r.Header.Get("Origin")
	if len(origin) > crossSiteMaxOrigin {
		origin = origin[:crossSiteMaxOrigin]
	}
	site := r.Header.Get("Sec-Fetch-Site")
	if len(site) > 32 {
		site = site[:32]
	}
	const reason = "a state-changing request from another site, carrying a client certificate, is refused (cross-site request forgery)"
	ev := audit.Event{
		Time: g.now().UTC(), Name: audit.EventAuthzDecision, Outcome: audit.OutcomeDeny,
		Resource: norm, Reason: reason, Client: r.RemoteAddr,
		Meta: map[string]string{"method": r.Method, "origin": origin, "sec_fetch_site": site, "via": "device", "check": "cross_site"},
	}
	if err := g.audit.Record(r.Context(), ev); err != nil {
		g.log.Error().Err(err).Msg("mtls: audit record failed; refusing")
		httpx.Unavailable(w)
		return true
	}
	httpx.Error(w, http.StatusForbidden, "cross_site", reason)
	return true
}
