package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
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
	maxTrackedNames  = 100000         // bound on throttling state kept for names that are not users (~10 MB)
	forgetNamesAfter = 24 * time.Hour // a non-user name's state is kept this long after its last failure
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

// account is the throttling state of one user name, whether or not a user
// of that name exists: tracking names rather than users is what makes a
// locked account and an unknown name answer alike.
type account struct {
	failures    int
	lockedUntil time.Time
	disabled    bool
	lastFailure time.Time
	inflight    int  // attempts admitted and not yet decided
	user        bool // a user of this name exists; persisted, never evicted
	dirty       bool // changed since last persisted
}

// bucket is a client address's token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

type throttle struct {
	mu       sync.Mutex
	accts    map[string]*account // kind \x00 name → state
	addrs    map[string]*bucket
	refusals map[string]*refusal // what was last recorded of refused attempts
	burst    float64
	refill   time.Duration
}

func newThrottle(burst int, refill time.Duration) *throttle {
	return &throttle{accts: map[string]*account{}, addrs: map[string]*bucket{}, refusals: map[string]*refusal{}, burst: float64(burst), refill: refill}
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

// lockedFor reports how long name is locked out (0 if it is not). A name
// whose password login is disabled answers an hour at a time.
func (t *throttle) lockedFor(kind, name string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.accts[acctKey(kind, name)]
	if a == nil {
		return 0
	}
	if a.disabled {
		return lockoutMax
	}
	if now.Before(a.lockedUntil) {
		return a.lockedUntil.Sub(now)
	}
	return 0
}

// begin admits one attempt for name, or says how long to wait. Attempts
// that are still being checked count as pending failures, so that
// concurrent guesses cannot exceed what the schedule allows one at a time:
// with f failures recorded, at most max(1, 5-f) attempts run at once (a
// burst beyond that waits a second). Every admitted attempt ends with end.
func (t *throttle) begin(kind, name string, now time.Time) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := acctKey(kind, name)
	a := t.accts[k]
	if a == nil {
		if len(t.accts) >= maxTrackedNames {
			t.evictNames(now)
		}
		a = &account{}
		t.accts[k] = a
	}
	if a.disabled {
		return lockoutMax, false
	}
	if now.Before(a.lockedUntil) {
		return a.lockedUntil.Sub(now), false
	}
	if a.inflight >= max(1, lockoutThreshold-a.failures) {
		return time.Second, false
	}
	a.inflight++
	return 0, true
}

// end closes an attempt that begin admitted.
func (t *throttle) end(kind, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a := t.accts[acctKey(kind, name)]; a != nil && a.inflight > 0 {
		a.inflight--
	}
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

// fail records a failure for name and reports whether it started a
// lockout (or disabled password login).
func (t *throttle) fail(kind, name string, now time.Time) (locked bool, until time.Time, disabled bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := acctKey(kind, name)
	a := t.accts[k]
	if a == nil {
		if len(t.accts) >= maxTrackedNames {
			t.evictNames(now)
		}
		a = &account{}
		t.accts[k] = a
	}
	a.failures++
	a.lastFailure = now
	a.dirty = true
	switch {
	case a.failures >= disableThreshold:
		a.disabled = true
		return true, time.Time{}, true
	case a.failures >= lockoutThreshold:
		d := lockoutBase << min(a.failures-lockoutThreshold, 10)
		d = min(d, lockoutMax)
		a.lockedUntil = now.Add(d)
		return true, a.lockedUntil, false
	}
	return false, time.Time{}, false
}

// evictNames drops the state of non-user names: those whose last failure
// is older than a day, then (under a flood of distinct names) any. Only in
// that second case could a locked unknown name come to answer unlike a
// locked real one; it takes more than 100,000 distinct failing names.
func (t *throttle) evictNames(now time.Time) {
	for k, a := range t.accts {
		if !a.user && !a.disabled && a.inflight == 0 && now.Sub(a.lastFailure) > forgetNamesAfter {
			delete(t.accts, k)
		}
	}
	// Make room for a tenth more at once, so that the scans are amortised.
	for k, a := range t.accts {
		if len(t.accts) < maxTrackedNames*9/10 {
			break
		}
		if !a.user && a.inflight == 0 {
			delete(t.accts, k)
		}
	}
}

// reset clears name's state after a success, an unlock or a recovery.
func (t *throttle) reset(kind, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a := t.accts[acctKey(kind, name)]; a != nil {
		*a = account{user: a.user, dirty: a.user, inflight: a.inflight}
	}
}

// markUser makes name's login state persistent (a user of that name
// exists), loading rec when the state is new.
func (t *throttle) markUser(name string, rec throttleRecord) { t.markUserKind(kindLogin, name, rec) }

// markUserKind is markUser for the state of kind (login or passkey).
func (t *throttle) markUserKind(kind, name string, rec throttleRecord) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := acctKey(kind, name)
	a := t.accts[k]
	if a == nil {
		a = &account{failures: rec.Failures, lockedUntil: rec.LockedUntil, disabled: rec.Disabled}
		t.accts[k] = a
	}
	a.user = true
}

// state returns name's login throttling state for listing and persisting.
func (t *throttle) state(name string) throttleRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.accts[acctKey(kindLogin, name)]
	if a == nil {
		return throttleRecord{}
	}
	return throttleRecord{Failures: a.failures, LockedUntil: a.lockedUntil, Disabled: a.disabled}
}

// dirtyUsers returns the users whose login state changed since the last
// call, with that state.
func (t *throttle) dirtyUsers() map[string]throttleRecord { return t.dirtyUsersKind(kindLogin) }

// dirtyUsersKind is dirtyUsers for the state of kind (login or passkey).
func (t *throttle) dirtyUsersKind(kind string) map[string]throttleRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]throttleRecord{}
	for k, a := range t.accts {
		if a.user && a.dirty {
			name, ok := strings.CutPrefix(k, kind+"\x00")
			if !ok {
				continue
			}
			out[name] = throttleRecord{Failures: a.failures, LockedUntil: a.lockedUntil, Disabled: a.disabled}
			a.dirty = false
		}
	}
	return out
}
