package ca

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/httpx"
	"github.com/hearth-home/hearth/internal/ratelimit"
)

// The per-address budget of failed enrollment, sign, renew and revoke
// attempts: without it an unauthenticated flood of refused requests writes
// one durable audit entry each, until the disk is full and the fail-closed
// audit log refuses everyone (OWASP ASVS 5.0 V2.4.1 anti-automation,
// V16.3.4 bounded logging; NIST SP 800-63B-4 §3.2.2 rate limiting). The
// mechanism is internal/ratelimit's, shared with mtls; an attempt takes a
// token when it starts, so concurrent attempts cannot overrun the budget,
// and a successful attempt gives its token back, so only failures count
// and one address's failures never slow another address.
const (
	failBurst     = 10               // failed attempts an address may make at once
	failRefill    = 6 * time.Second  // one more failed attempt allowed per this
	failForget    = 24 * time.Hour   // idle state older than this is dropped
	maxFailAddrs  = 100000           // bound on tracked addresses (~10 MB)
	throttleAudit = 10 * time.Second // a throttled address is audited once per this
)

// newFailThrottle is the per-address budget of failed attempts, burst
// attempts at once (failBurst unless a test raises it).
func newFailThrottle(burst int) *ratelimit.Limiter {
	return ratelimit.New(ratelimit.Config{
		Burst:      burst,
		Refill:     failRefill,
		MaxEntries: maxFailAddrs,
		AuditEvery: throttleAudit,
		Forget:     failForget,
	})
}

// admit starts a failure-budgeted attempt from r's client before anything
// of the request is read. Over budget it answers 429 with Retry-After
// (hearth's JSON, or smallstep's when step is set), records the refusal in
// the audit log at most once per throttleAudit per address with the number
// left out, and returns false. An admitted attempt that succeeds must call
// c.thr.GiveBack(r.RemoteAddr).
func (c *CA) admit(w http.ResponseWriter, r *http.Request, ev audit.Event, step bool) bool {
	return c.admitWith(w, r, ev, func(w http.ResponseWriter, _ *http.Request, d time.Duration, msg string) {
		if !step {
			httpx.TooMany(w, d, msg)
			return
		}
		secs := max(1, int((d+time.Second-1)/time.Second))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusTooManyRequests)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": http.StatusTooManyRequests, "message": msg})
	})
}

// admitWith is admit with the 429 answer written by throttled (ACME
// answers with its own problem document).
func (c *CA) admitWith(w http.ResponseWriter, r *http.Request, ev audit.Event, throttled func(w http.ResponseWriter, r *http.Request, d time.Duration, msg string)) bool {
	now := c.thrNow()
	d, ok := c.thr.Take(r.RemoteAddr, now)
	if ok {
		return true
	}
	const msg = "too many failed attempts from this address; try again later"
	if rec, n := c.thr.ShouldRecord(r.RemoteAddr, now); rec {
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
	throttled(w, r, d, msg)
	return false
}
