package mtls

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/httpx"
)

// Defaults of the anonymous-request budget (GatewayOptions.AnonBurst and
// AnonRefill).
//
// Every agent request that ends in 401 writes one durable audit entry, and
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

const (
	anonForget     = 24 * time.Hour   // idle state older than this is dropped
	maxAnonAddrs   = 100000           // bound on tracked addresses (~10 MB)
	anonAuditEvery = 10 * time.Second // a throttled address is audited once per this
)

// anonBucket is one client address's budget of failed authentications, and
// when its throttled refusals were last audited.
type anonBucket struct {
	tokens     float64
	last       time.Time // of the last refill computation
	audited    time.Time // when a throttled refusal was last recorded
	suppressed int       // throttled refusals not recorded since then
}

// anonLimiter is a token bucket per client address (IPv6 per /64,
// IPv4-mapped IPv6 as IPv4). Only requests that failed authentication take
// tokens, so an authenticated request is never slowed, and one address's
// failures never slow another address.
type anonLimiter struct {
	mu     sync.Mutex
	addrs  map[string]*anonBucket
	max    int // bound on len(addrs); maxAnonAddrs unless a test lowers it
	burst  float64
	refill time.Duration
}

func newAnonLimiter(burst int, refill time.Duration) *anonLimiter {
	if burst <= 0 {
		burst = DefaultAnonBurst
	}
	if refill <= 0 {
		refill = DefaultAnonRefill
	}
	return &anonLimiter{addrs: map[string]*anonBucket{}, max: maxAnonAddrs, burst: float64(burst), refill: refill}
}

// anonKey is the client's IP address; IPv6 addresses count per /64, since
// one host commonly holds a whole /64 (as ca's and auth's keys do).
func anonKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		if len(host) > 64 {
			host = host[:64]
		}
		return host
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// anonVerdict is what the limiter says about one failed authentication.
type anonVerdict struct {
	ok         bool          // within budget: answer 401 and audit it as usual
	retry      time.Duration // when not ok: until a token is available
	record     bool          // when not ok: record this refusal now
	unrecorded int           // when record: throttled refusals left out before it
}

// fail counts one failed authentication from addr at now.
func (l *anonLimiter) fail(addr string, now time.Time) anonVerdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(anonKey(addr), now)
	if b.tokens >= 1 {
		b.tokens--
		return anonVerdict{ok: true}
	}
	v := anonVerdict{retry: time.Duration((1 - b.tokens) * float64(l.refill))}
	if !b.audited.IsZero() && now.Sub(b.audited) < anonAuditEvery {
		b.suppressed++
		return v
	}
	v.record, v.unrecorded = true, b.suppressed
	b.audited, b.suppressed = now, 0
	return v
}

// bucket returns k's bucket refilled up to now, creating it (and making
// room for it) if needed. l.mu is held.
func (l *anonLimiter) bucket(k string, now time.Time) *anonBucket {
	b := l.addrs[k]
	if b == nil {
		if len(l.addrs) >= l.max {
			l.evict(now)
		}
		b = &anonBucket{tokens: l.burst, last: now}
		l.addrs[k] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(l.burst, b.tokens+float64(el)/float64(l.refill))
		b.last = now
	}
	return b
}

// evict drops the state idle for anonForget, then the state that is as
// good as new (a full bucket whose refusals were recorded long enough ago),
// then, under a flood of distinct addresses, arbitrary entries down to
// nine tenths of the bound so that the scans are amortised. l.mu is held.
func (l *anonLimiter) evict(now time.Time) {
	for k, b := range l.addrs {
		idle := now.Sub(b.last)
		full := b.tokens+float64(idle)/float64(l.refill) >= l.burst
		if idle > anonForget || (full && b.suppressed == 0 && now.Sub(b.audited) >= anonAuditEvery) {
			delete(l.addrs, k)
		}
	}
	for k := range l.addrs {
		if len(l.addrs) < l.max*9/10 {
			break
		}
		delete(l.addrs, k)
	}
}

// size is the number of tracked addresses.
func (l *anonLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.addrs)
}

// admitAnon counts a failed authentication on an agent path from a remote
// client. Within budget it returns true and the caller answers 401 and
// audits it as usual. Over budget it answers 429 with Retry-After, without
// an audit entry except one per anonAuditEvery per address (with the
// number left out and the retry delay), and returns false; if that entry
// cannot be written the answer is 503, as for every unrecorded decision.
func (g *Gateway) admitAnon(w http.ResponseWriter, r *http.Request, norm string, fail authFailure, now time.Time, zone authz.Zone) bool {
	v := g.anon.fail(r.RemoteAddr, now)
	if v.ok {
		return true
	}
	if v.record {
		ev := audit.Event{
			Time:     now.UTC(),
			Name:     audit.EventAuthzDecision,
			Outcome:  audit.OutcomeDeny,
			Resource: norm,
			Reason:   "throttled: too many failed authentications from this address (last: " + fail.reason() + ")",
			Client:   r.RemoteAddr,
			Meta: map[string]string{
				"method":      r.Method,
				"zone":        string(zone),
				"throttled":   "true",
				"retry_after": v.retry.Round(time.Second).String(),
			},
		}
		if v.unrecorded > 0 {
			ev.Meta["similar_unrecorded"] = strconv.Itoa(v.unrecorded)
		}
		if err := g.audit.Record(r.Context(), ev); err != nil {
			g.log.Error().Err(err).Msg("mtls: audit record failed; refusing")
			httpx.Unavailable(w)
			return false
		}
	}
	httpx.TooMany(w, v.retry, "too many unauthenticated requests from this address; try again later")
	return false
}
