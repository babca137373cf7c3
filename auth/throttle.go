package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/netip"
	"sync"
	"time"
)

// The lockout policy (OWASP ASVS 5.0 V6.3.1, NIST SP 800-63B-4 §3.2.2);
// the package comment states it in words.
const (
	lockoutThreshold = 5              // consecutive failures before the first lockout
	lockoutBase      = time.Minute    // first lockout; doubles per further failure
	lockoutMax       = time.Hour      // cap on one lockout
	disableThreshold = 100            // NIST's ceiling: password login disabled until recovered or unlocked
	maxTrackedNames  = 100000         // bound on lockout records kept for names that are not users (~10 MB)
	forgetNamesAfter = 24 * time.Hour // a non-user name's record is kept this long after its last failure
	maxTrackedAddrs  = 10000          // bound on client-address buckets
)

// Kinds of throttled secret. Login (and password change) and recovery
// (recovery and reset codes) count separately, so that an attacker who
// keeps the password locked cannot also block recovery with the same
// failures.
const (
	kindLogin   = "login"
	kindRecover = "recover"
)

// bucket is a client address's token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

type throttle struct {
	mu       sync.Mutex
	addrs    map[string]*bucket
	refusals map[string]*refusal // what was last recorded of refused attempts
	burst    float64
	refill   time.Duration
}

func newThrottle(burst int, refill time.Duration) *throttle {
	return &throttle{addrs: map[string]*bucket{}, refusals: map[string]*refusal{}, burst: float64(burst), refill: refill}
}

// refusal remembers when a refused attempt was last recorded in the audit
// log, so that a flood of refused attempts writes one entry per key every
// refusalEvery (with the number left out) instead of one per request.
type refusal struct {
	last       time.Time
	suppressed int
}

const refusalEvery = 10 * time.Second

// recordRefusal reports whether a refused attempt under key should be
// recorded now, and how many were left unrecorded since the last one.
func (t *throttle) recordRefusal(key string, now time.Time) (bool, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.refusals[key]
	if r == nil {
		if len(t.refusals) >= maxTrackedAddrs {
			clear(t.refusals)
		}
		r = &refusal{}
		t.refusals[key] = r
	}
	if !r.last.IsZero() && now.Sub(r.last) < refusalEvery {
		r.suppressed++
		return false, 0
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	return true, n
}

// acctKey bounds the key size of an attacker-chosen name.
func acctKey(kind, name string) string {
	if len(name) > 64 {
		sum := sha256.Sum256([]byte(name))
		name = "#" + hex.EncodeToString(sum[:])
	}
	return kind + "\x00" + name
}

// clientKey is the client's IP address; IPv6 addresses count per /64, since
// one host commonly holds a whole /64.
func clientKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// takeClient takes one attempt from the client address's bucket, or says
// how long until one is available.
func (t *throttle) takeClient(addr string, now time.Time) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := clientKey(addr)
	b := t.addrs[k]
	if b == nil {
		if len(t.addrs) >= maxTrackedAddrs {
			t.evictAddrs(now)
		}
		b = &bucket{tokens: t.burst, last: now}
		t.addrs[k] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(t.burst, b.tokens+float64(el)/float64(t.refill))
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) * float64(t.refill)), false
}

// refundClient gives back the attempt of a successful login, so a
// household behind one address is not slowed by its own logins.
func (t *throttle) refundClient(addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := t.addrs[clientKey(addr)]; b != nil {
		b.tokens = min(t.burst, b.tokens+1)
	}
}

func (t *throttle) evictAddrs(now time.Time) {
	for k, b := range t.addrs {
		if b.tokens+float64(now.Sub(b.last))/float64(t.refill) >= t.burst {
			delete(t.addrs, k)
		}
	}
	for k := range t.addrs { // still full: drop arbitrary entries, a tenth at once
		if len(t.addrs) < maxTrackedAddrs*9/10 {
			break
		}
		delete(t.addrs, k)
	}
}
