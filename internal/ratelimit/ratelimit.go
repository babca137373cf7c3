// Package ratelimit holds the per-client-address token bucket that keeps
// unauthenticated floods out of hearth's fail-closed audit log: a remote
// address (IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 per /64) may fail
// Burst times at once and once more per Refill; beyond that the caller
// answers 429 with Retry-After, and records the throttled refusals in
// aggregate, at most once per AuditEvery per address with the number left
// out (OWASP ASVS 5.0 V2.4.1 anti-automation, V16.3.4 bounded logging;
// NIST SP 800-63B-4 §3.2.2 rate limiting).
//
// Trust boundary: the address comes from the untrusted network (the
// connection's remote address, never a header), so the key derived from it
// is bounded in length and the map of tracked addresses is bounded in
// size, evicting idle or recovered state first. The package reads no
// clock: callers pass the time, so that their injected clock rules.
package ratelimit

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults of the Config fields that may be left zero.
const (
	DefaultMaxEntries = 100000           // bound on tracked addresses (~10 MB)
	DefaultAuditEvery = 10 * time.Second // a throttled address is recorded once per this
	DefaultForget     = 24 * time.Hour   // idle state older than this is dropped first
)

// Config is a Limiter's policy.
type Config struct {
	// Burst is how many attempts an address may make at once; it must be
	// positive.
	Burst int
	// Refill is how often one more attempt is allowed to an address over
	// its burst; it must be positive.
	Refill time.Duration
	// MaxEntries bounds the number of tracked addresses; zero means
	// DefaultMaxEntries.
	MaxEntries int
	// AuditEvery is how often a throttled address's refusals are to be
	// recorded (ShouldRecord); zero means DefaultAuditEvery.
	AuditEvery time.Duration
	// Forget is how long an address's state is kept idle before eviction
	// drops it whatever its budget; zero means DefaultForget.
	Forget time.Duration
}

// bucket is one client address's budget, and when its throttled refusals
// were last recorded.
type bucket struct {
	tokens     float64
	last       time.Time // of the last refill computation
	audited    time.Time // when a throttled refusal was last recorded
	suppressed int       // throttled refusals not recorded since then
}

// Limiter is a token bucket per client address (see Key). It is safe for
// concurrent use.
type Limiter struct {
	cfg   Config
	burst float64

	mu    sync.Mutex
	addrs map[string]*bucket
}

// New returns a Limiter with cfg's policy, its zero fields defaulted. It
// panics if Burst or Refill is not positive: both are the caller's
// constants or already-defaulted options.
func New(cfg Config) *Limiter {
	if cfg.Burst <= 0 || cfg.Refill <= 0 {
		panic("ratelimit: Config.Burst and Config.Refill must be positive")
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.AuditEvery <= 0 {
		cfg.AuditEvery = DefaultAuditEvery
	}
	if cfg.Forget <= 0 {
		cfg.Forget = DefaultForget
	}
	return &Limiter{cfg: cfg, burst: float64(cfg.Burst), addrs: map[string]*bucket{}}
}

// Config is l's policy, with the defaults New filled in.
func (l *Limiter) Config() Config { return l.cfg }

// Key is the bucket key of a client address ("host:port" or a bare host):
// the IP address, IPv4-mapped IPv6 as IPv4, without an IPv6 zone, and IPv6
// per /64 since one host commonly holds a whole /64. Anything that is not
// an IP address is its own key, cut to 64 bytes.
func Key(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
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

// Take starts an attempt from addr at now: it takes one token and returns
// ok, or reports how long until a token is available. Taking the token
// when the attempt starts means concurrent attempts cannot overrun the
// budget; a caller that counts only failures gives the token of a success
// back (GiveBack).
func (l *Limiter) Take(addr string, now time.Time) (retryAfter time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(Key(addr), now)
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) * float64(l.cfg.Refill)), false
}

// GiveBack returns the token of an attempt from addr that succeeded. It
// does nothing for an address that is not tracked.
func (l *Limiter) GiveBack(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.addrs[Key(addr)]; b != nil {
		b.tokens = min(l.burst, b.tokens+1)
	}
}

// ShouldRecord notes a throttled refusal from addr at now (one that Take
// refused) and reports whether the caller should record it in the audit
// log now, with how many throttled refusals from the address were left
// unrecorded before it: the first one is recorded, then at most one per
// AuditEvery.
func (l *Limiter) ShouldRecord(addr string, now time.Time) (record bool, unrecorded int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(Key(addr), now)
	if !b.audited.IsZero() && now.Sub(b.audited) < l.cfg.AuditEvery {
		b.suppressed++
		return false, 0
	}
	n := b.suppressed
	b.audited, b.suppressed = now, 0
	return true, n
}

// Len is the number of tracked addresses.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.addrs)
}

// bucket returns k's bucket refilled up to now, creating it (and making
// room for it) if needed. l.mu is held.
func (l *Limiter) bucket(k string, now time.Time) *bucket {
	b := l.addrs[k]
	if b == nil {
		if len(l.addrs) >= l.cfg.MaxEntries {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.addrs[k] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(l.burst, b.tokens+float64(el)/float64(l.cfg.Refill))
		b.last = now
	}
	return b
}

// evict drops the state idle for Forget, then the state that is as good as
// new (a full bucket whose refusals were recorded long enough ago), then,
// under a flood of distinct addresses, arbitrary entries down to nine
// tenths of the bound so that the scans are amortised. l.mu is held.
func (l *Limiter) evict(now time.Time) {
	for k, b := range l.addrs {
		idle := now.Sub(b.last)
		full := b.tokens+float64(idle)/float64(l.cfg.Refill) >= l.burst
		if idle > l.cfg.Forget || (full && b.suppressed == 0 && now.Sub(b.audited) >= l.cfg.AuditEvery) {
			delete(l.addrs, k)
		}
	}
	for k := range l.addrs {
		if len(l.addrs) < l.cfg.MaxEntries*9/10 {
			break
		}
		delete(l.addrs, k)
	}
}
