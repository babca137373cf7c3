package ca

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/httpx"
)

// The per-address budget of failed enrollment, sign, renew and revoke
// attempts: without it an unauthenticated flood of refused requests writes
// one durable audit entry each, until the disk is full and the fail-closed
// audit log refuses everyone (OWASP ASVS 5.0 V2.4.1 anti-automation,
// V16.3.4 bounded logging; NIST SP 800-63B-4 §3.2.2 rate limiting). The
// policy mirrors auth's client-address buckets.
const (
	failBurst     = 10               // failed attempts an address may make at once
	failRefill    = 6 * time.Second  // one more failed attempt allowed per this
	failForget    = 24 * time.Hour   // idle state older than this is dropped
	maxFailAddrs  = 100000           // bound on tracked addresses (~10 MB)
	throttleAudit = 10 * time.Second // a throttled address is audited once per this
)

// failBucket is one client address's budget of failed attempts, and when
// its throttled refusals were last audited.
type failBucket struct {
	tokens     float64
	last       time.Time // of the last refill computation
	audited    time.Time // when a throttled refusal was last recorded
	suppressed int       // throttled refusals not recorded since then
}

// failThrottle is a token bucket per client address (IPv6 per /64). An
// attempt takes a token when it starts, so concurrent attempts cannot
// overrun the budget; a successful attempt gives its token back, so only
// failures count and one address's failures never slow another address.
type failThrottle struct {
	mu     sync.Mutex
	addrs  map[string]*failBucket
	max    int // bound on len(addrs); maxFailAddrs unless a test lowers it
	now    func() time.Time
	burst  float64
	refill time.Duration
}

func newFailThrottle(now func() time.Time) *failThrottle {
	return &failThrottle{addrs: map[string]*failBucket{}, max: maxFailAddrs, burst: failBurst, refill: failRefill, now: now}
}

// addrKey is the client's IP address; IPv6 addresses count per /64, since
// one host commonly holds a whole /64 (as auth's clientKey does).
func addrKey(remoteAddr string) string {
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

// take starts an attempt from addr: it takes one token, or reports how
// long until one is available.
func (t *failThrottle) take(addr string, now time.Time) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.bucket(addrKey(addr), now)
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) * float64(t.refill)), false
}

// bucket returns k's bucket refilled up to now, creating it (and making
// room for it) if needed. t.mu is held.
func (t *failThrottle) bucket(k string, now time.Time) *failBucket {
	b := t.addrs[k]
	if b == nil {
		if len(t.addrs) >= t.max {
			t.evict(now)
		}
		b = &failBucket{tokens: t.burst, last: now}
		t.addrs[k] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(t.burst, b.tokens+float64(el)/float64(t.refill))
		b.last = now
	}
	return b
}

// refund gives back the token of an attempt that succeeded.
func (t *failThrottle) refund(addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := t.addrs[addrKey(addr)]; b != nil {
		b.tokens = min(t.burst, b.tokens+1)
	}
}

// refused notes a throttled refusal from addr and reports whether it
// should be recorded now, with how many were left unrecorded before it.
func (t *failThrottle) refused(addr string, now time.Time) (bool, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.bucket(addrKey(addr), now)
	if !b.audited.IsZero() && now.Sub(b.audited) < throttleAudit {
		b.suppressed++
		return false, 0
	}
	n := b.suppressed
	b.audited, b.suppressed = now, 0
	return true, n
}

// evict drops the state idle for failForget, then the state that is as
// good as new (a full bucket whose refusals were recorded long enough ago),
// then, under a flood of distinct addresses, arbitrary entries down to
// nine tenths of the bound so that the scans are amortised. t.mu is held.
func (t *failThrottle) evict(now time.Time) {
	for k, b := range t.addrs {
		idle := now.Sub(b.last)
		full := b.tokens+float64(idle)/float64(t.refill) >= t.burst
		if idle > failForget || (full && b.suppressed == 0 && now.Sub(b.audited) >= throttleAudit) {
			delete(t.addrs, k)
		}
	}
	for k := range t.addrs {
		if len(t.addrs) < t.max*9/10 {
			break
		}
		delete(t.addrs, k)
	}
}

// admit starts a failure-budgeted attempt from r's client before anything
// of the request is read. Over budget it answers 429 with Retry-After
// (hearth's JSON, or smallstep's when step is set), records the refusal in
// the audit log at most once per throttleAudit per address with the number
// left out, and returns false. An admitted attempt that succeeds must call
// c.thr.refund(r.RemoteAddr).
func (c *CA) admit(w http.ResponseWriter, r *http.Request, ev audit.Event, step bool) bool {
	now := c.thr.now()
	d, ok := c.thr.take(r.RemoteAddr, now)
	if ok {
		return true
	}
	const msg = "too many failed attempts from this address; try again later"
	if rec, n := c.thr.refused(r.RemoteAddr, now); rec {
		ev.Outcome, ev.Client = audit.OutcomeFailure, r.RemoteAddr
		ev.Reason = "throttled: too many failed attempts from this address"
		ev.Meta = map[string]string{"retry_after": d.Round(time.Second).String()}
		if n > 0 {
			ev.Meta["similar_unrecorded"] = strconv.Itoa(n)
		}
		if err := c.audit.Record(r.Context(), ev); err != nil {
			c.log.Error().Err(err).Str("event", ev.Name).Msg("ca: audit entry failed; refusing")
			httpx.Unavailable(w)
			return false
		}
	}
	if !step {
		httpx.TooMany(w, d, msg)
		return false
	}
	secs := max(1, int((d+time.Second-1)/time.Second))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTooManyRequests)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": http.StatusTooManyRequests, "message": msg})
	return false
}
