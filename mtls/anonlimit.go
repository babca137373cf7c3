package mtls

import (
	"net/http"
	"strconv"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/httpx"
	"github.com/hearth-home/hearth/internal/ratelimit"
)

// Defaults of the anonymous-request budget (GatewayOptions.AnonBurst and
// AnonRefill).
//
// Every agent request that ends in 401 writes one durable audit entry (and
// so does every anonymous request to hearth's admin API, [Gateway.Require]),
// and
// the audit log is fail-closed: without a budget, an internet flood of
// anonymous requests fills the disk and then refuses the household too. A
// remote client address may therefore fail authentication AnonBurst times
// at once and once more per AnonRefill; beyond that it gets 429 with
// Retry-After, and its throttled refusals are recorded in aggregate, one
// entry per address per 10 s with their count (OWASP ASVS 5.0 V2.4.1
// anti-automation, V16.3.4 bounded logging; NIST SP 800-63B-4 §3.2.2 rate
// limiting). The policy mirrors ca's and auth's client-address buckets.
const (
	DefaultAnonBurst  = 20
	DefaultAnonRefill = 3 * time.Second
)

// The rest of the anonymous-request budget's policy; the mechanism is
// internal/ratelimit's, shared with ca.
const (
	anonForget     = 24 * time.Hour   // idle state older than this is dropped
	maxAnonAddrs   = 100000           // bound on tracked addresses (~10 MB)
	anonAuditEvery = 10 * time.Second // a throttled address is audited once per this
)

// newAnonLimiter is the budget of failed authentications per client
// address (IPv6 per /64, IPv4-mapped IPv6 as IPv4), with GatewayOptions'
// AnonBurst and AnonRefill or their defaults. Only requests that failed
// authentication take tokens, so an authenticated request is never slowed,
// and one address's failures never slow another address.
func newAnonLimiter(burst int, refill time.Duration) *ratelimit.Limiter {
	if burst <= 0 {
		burst = DefaultAnonBurst
	}
	if refill <= 0 {
		refill = DefaultAnonRefill
	}
	return ratelimit.New(ratelimit.Config{
		Burst:      burst,
		Refill:     refill,
		MaxEntries: maxAnonAddrs,
		AuditEvery: anonAuditEvery,
		Forget:     anonForget,
	})
}

// admitAnon counts a failed authentication on an agent path from a remote
// client (see admitAnonFor); fail is why it failed.
func (g *Gateway) admitAnon(w http.ResponseWriter, r *http.Request, norm string, fail authFailure, now time.Time, zone authz.Zone) bool {
	return g.admitAnonFor(w, r, norm, fail.reason(), now, zone, nil)
}

// admitAnonFor counts a request from a remote client that failed
// authentication, on an agent path (admitAnon) or on one of hearth's own
// endpoints guarded by [Gateway.Require]: both take from the same budget
// per address, so a client cannot double its allowance by alternating
// between them. Within budget it returns true and the caller answers 401
// and audits it as usual. Over budget it answers 429 with Retry-After,
// without an audit entry except one per anonAuditEvery per address (with
// the number left out and the retry delay; last says why the latest
// request failed, meta is added to the entry's), and returns false; if
// that entry cannot be written the answer is 503, as for every unrecorded
// decision.
func (g *Gateway) admitAnonFor(w http.ResponseWriter, r *http.Request, resource, last string, now time.Time, zone authz.Zone, meta map[string]string) bool {
	retry, ok := g.anon.Take(r.RemoteAddr, now)
	if ok {
		return true
	}
	if record, unrecorded := g.anon.ShouldRecord(r.RemoteAddr, now); record {
		ev := audit.Event{
			Time:     now.UTC(),
			Name:     audit.EventAuthzDecision,
			Outcome:  audit.OutcomeDeny,
			Resource: resource,
			Reason:   "throttled: too many failed authentications from this address (last: " + last + ")",
			Client:   r.RemoteAddr,
			Meta: map[string]string{
				"method":      r.Method,
				"zone":        string(zone),
				"throttled":   "true",
				"retry_after": retry.Round(time.Second).String(),
			},
		}
		for k, v := range meta {
			ev.Meta[k] = v
		}
		if unrecorded > 0 {
			ev.Meta["similar_unrecorded"] = strconv.Itoa(unrecorded)
		}
		if err := g.audit.Record(r.Context(), ev); err != nil {
			g.log.Error().Err(err).Msg("mtls: audit record failed; refusing")
			httpx.Unavailable(w)
			return false
		}
	}
	httpx.TooMany(w, retry, "too many unauthenticated requests from this address; try again later")
	return false
}
