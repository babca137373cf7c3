package mtls

import (
	"net/http"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/httpx"
)

// APIHandler serves the gateway's own endpoints for requests that already
// carry their principal in the context (authz.WithPrincipal), so the server can
// mount it in the hearth mux that the admin socket also serves:
//
//	GET  /.hearth/healthz        {"ok": true}, no authentication
//	GET  /.hearth/v1/whoami      the principal, method, zone, capabilities
//	POST /.hearth/v1/authz/check {"capability"} → {"allowed", "reason"}
//
// The gateway answers these paths itself, before its Hearth handler.
func (g *Gateway) APIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pr := authz.PrincipalFrom(r.Context())
		switch r.URL.Path {
		case "/.hearth/healthz":
			g.healthz(w, r)
		case "/.hearth/v1/whoami":
			g.whoami(w, r, pr)
		case "/.hearth/v1/authz/check":
			g.check(w, r, pr)
		default:
			httpx.Error(w, http.StatusNotFound, "not_found", "no such hearth endpoint")
		}
	})
}

func allowMethod(w http.ResponseWriter, r *http.Request, m string) bool {
	if r.Method == m || m == http.MethodGet && r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", m)
	httpx.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", "use "+m)
	return false
}

func (g *Gateway) healthz(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	httpx.JSON(w, http.StatusOK, struct {
		OK bool `json:"ok"`
	}{true})
}

func unauthenticated(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="hearth"`)
	httpx.Error(w, http.StatusUnauthorized, "unauthenticated", "present a client certificate or a bearer token")
}

// Whoami is the answer of GET /.hearth/v1/whoami.
type Whoami struct {
	Principal string       `json:"principal"`
	Kind      authz.Kind   `json:"kind"`
	Method    authz.Method `json:"method"`
	Zone      authz.Zone   `json:"zone"`
	MFA       bool         `json:"mfa"`
	// PhishingResistant: the session came from a passkey sign-in.
	PhishingResistant bool               `json:"phishing_resistant,omitempty"`
	AuthTime          *time.Time         `json:"auth_time,omitempty"`
	Capabilities      []authz.Capability `json:"capabilities"`
}

func (g *Gateway) whoami(w http.ResponseWriter, r *http.Request, pr *authz.Principal) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	if pr == nil {
		unauthenticated(w)
		return
	}
	out := Whoami{
		Principal: pr.ID, Kind: pr.Kind, Method: pr.Method, Zone: pr.Zone, MFA: pr.MFA,
		PhishingResistant: pr.PhishingResistant, Capabilities: pr.Caps,
	}
	if out.Capabilities == nil {
		out.Capabilities = []authz.Capability{}
	}
	if !pr.AuthTime.IsZero() {
		t := pr.AuthTime.UTC()
		out.AuthTime = &t
	}
	httpx.JSON(w, http.StatusOK, out)
}

// CheckRequest is the body of POST /.hearth/v1/authz/check.
type CheckRequest struct {
	Capability string `json:"capability"`
}

// CheckResponse is its answer.
type CheckResponse struct {
	Allowed    bool   `json:"allowed"`
	Reason     string `json:"reason"`
	Capability string `json:"capability"`
}

func (g *Gateway) check(w http.ResponseWriter, r *http.Request, pr *authz.Principal) {
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	if pr == nil {
		unauthenticated(w)
		return
	}
	var in CheckRequest
	if !httpx.DecodeJSON(w, r, 4<<10, &in) {
		return
	}
	now := g.now()
	d := g.policy.Decide(pr, authz.Capability(in.Capability), now)
	if err := g.record(r, pr, d, now, "authz/check"); err != nil {
		httpx.Unavailable(w)
		return
	}
	httpx.JSON(w, http.StatusOK, CheckResponse{Allowed: d.Allow, Reason: d.Reason(), Capability: in.Capability})
}

// record writes an authz.decision entry for a decision about one of
// hearth's own endpoints.
func (g *Gateway) record(r *http.Request, pr *authz.Principal, d authz.Decision, now time.Time, source string) error {
	ev := audit.Event{
		Time:     now.UTC(),
		Name:     audit.EventAuthzDecision,
		Outcome:  audit.OutcomeDeny,
		Resource: r.URL.Path,
		Reason:   d.Reason(),
		Client:   r.RemoteAddr,
		Meta:     map[string]string{"method": r.Method, "capability": string(d.Capability), "source": source},
	}
	if d.Allow {
		ev.Outcome = audit.OutcomeAllow
	}
	if pr != nil {
		ev.Principal = pr.ID
		ev.Meta["via"] = string(pr.Method)
		ev.Meta["zone"] = string(pr.Zone)
	}
	if ev.Client == "" {
		ev.Client = "local"
	}
	err := g.audit.Record(r.Context(), ev)
	if err != nil {
		g.log.Error().Err(err).Msg("mtls: audit record failed; refusing")
	}
	return err
}

// Require guards one of hearth's own handlers (e.g. /.hearth/v1/admin/…)
// with capability c: it takes the principal from the context (set by the
// gateway or by [Gateway.LocalPrincipal]), decides with authz, records the
// decision in the audit log and waits for it, then answers 401 (no
// principal), 403 (denied, naming the capability), 503 (audit failed), or
// calls h.
//
// A request without a principal from a remote client (its real peer
// address, as the gateway computes the zone, is not in a trusted network)
// first takes from the gateway's budget of failed authentications for its
// address, the same one agent paths use: over it the answer is 429 with
// Retry-After and the refusal is audited in aggregate (anonlimit.go), so an
// anonymous flood cannot make the fail-closed audit log write one entry per
// request (OWASP ASVS 5.0 V2.4.1, V16.3.4). Lan clients, the admin socket
// (whose principal [Gateway.LocalPrincipal] always sets) and authenticated
// requests are never limited.
func (g *Gateway) Require(c authz.Capability, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pr := authz.PrincipalFrom(r.Context())
		now := g.now()
		if pr == nil {
			zone := g.zone(r.RemoteAddr)
			if zone != authz.ZoneLAN && !g.admitAnonFor(w, r, r.URL.Path, "no authenticated principal for "+string(c), now, zone,
				map[string]string{"capability": string(c), "source": "require"}) {
				return
			}
		}
		d := g.policy.Decide(pr, c, now)
		if err := g.record(r, pr, d, now, "require"); err != nil {
			httpx.Unavailable(w)
			return
		}
		switch {
		case d.Allow:
			h.ServeHTTP(w, r)
		case pr == nil:
			w.Header().Set("WWW-Authenticate", `Bearer realm="hearth"`)
			writeDenial(w, http.StatusUnauthorized, "unauthenticated", d.Reason(), c)
		default:
			writeDenial(w, http.StatusForbidden, "forbidden", d.Reason(), c)
		}
	})
}

// NewLocalPrincipal is the admin socket's principal: the owner's uid on the
// host (the socket checks SO_PEERCRED), method local, zone lan, every
// capability the policy knows.
func NewLocalPrincipal(policy *authz.Policy, now time.Time) *authz.Principal {
	return &authz.Principal{
		ID:       authz.LocalPrincipalID,
		Kind:     authz.KindUser,
		Caps:     policy.All(),
		Method:   authz.MethodLocal,
		Zone:     authz.ZoneLAN,
		AuthTime: now,
	}
}

// LocalPrincipal wraps the admin socket's handler: every request on it
// carries [NewLocalPrincipal] in its context, and any X-Hearth-* header is
// removed.
func (g *Gateway) LocalPrincipal(h http.Handler) http.Handler {
	return LocalPrincipal(g.policy, g.now, h)
}

// LocalPrincipal is [Gateway.LocalPrincipal] without a gateway; now may be
// nil (time.Now).
func LocalPrincipal(policy *authz.Policy, now func() time.Time, h http.Handler) http.Handler {
	if now == nil {
		now = time.Now
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stripHearthHeaders(r.Header)
		h.ServeHTTP(w, r.WithContext(authz.WithPrincipal(r.Context(), NewLocalPrincipal(policy, now()))))
	})
}
