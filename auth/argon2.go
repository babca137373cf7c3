package auth

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"
)

// Password hashes are argon2id (RFC 9106) in the PHC string format
// $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>, with unpadded
// standard base64, a 16-byte per-user salt and a 32-byte tag (RFC 9106 §4;
// OWASP ASVS 5.0 V11.4.2).
const (
	saltLen = 16
	tagLen  = 32
)

// ErrBusy means every argon2id slot and the bounded queue in front of them
// are taken: the caller answers 503 at once rather than letting a flood of
// logins exhaust memory.
var ErrBusy = errors.New("auth: too many password checks in progress")

// phc is a parsed argon2id PHC string.
type phc struct {
	params Argon2Params
	salt   []byte
	tag    []byte
}

var b64 = base64.RawStdEncoding

// String encodes p in the PHC string format.
func (p phc) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		p.params.MemoryKiB, p.params.Time, p.params.Threads, b64.EncodeToString(p.salt), b64.EncodeToString(p.tag))
}

// parsePHC parses an argon2id PHC string strictly: fields in the canonical
// order, canonical decimal numbers, bounded costs, non-empty salt and tag.
func parsePHC(s string) (phc, error) {
	var p phc
	bad := func(why string) (phc, error) { return phc{}, fmt.Errorf("auth: malformed password hash: %s", why) }
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" {
		return bad("not $-separated PHC")
	}
	if f[1] != "argon2id" {
		return bad("algorithm is not argon2id")
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("unsupported argon2 version")
	}
	kv := strings.Split(f[3], ",")
	if len(kv) != 3 {
		return bad("want m, t and p")
	}
	num := func(field, prefix string, max uint64) (uint64, bool) {
		v, ok := strings.CutPrefix(field, prefix)
		if !ok || v == "" || len(v) > 10 || (v[0] == '0') {
			return 0, false
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 || n > max {
			return 0, false
		}
		return n, true
	}
	m, ok1 := num(kv[0], "m=", 4<<20)
	t, ok2 := num(kv[1], "t=", 1<<10)
	pp, ok3 := num(kv[2], "p=", 255)
	if !ok1 || !ok2 || !ok3 {
		return bad("bad cost parameters")
	}
	if m < 8*pp {
		return bad("memory below 8 × lanes")
	}
	p.params = Argon2Params{Time: uint32(t), MemoryKiB: uint32(m), Threads: uint8(pp)}
	var err error
	if p.salt, err = b64.Strict().DecodeString(f[4]); err != nil || len(p.salt) < 8 || len(p.salt) > 64 {
		return bad("bad salt")
	}
	if p.tag, err = b64.Strict().DecodeString(f[5]); err != nil || len(p.tag) < 16 || len(p.tag) > 64 {
		return bad("bad hash")
	}
	return p, nil
}

// hasher runs argon2id under a concurrency limit with a bounded queue, so
// peak memory stays below slots × m plus a small constant however many
// logins arrive at once.
type hasher struct {
	params  Argon2Params
	rand    io.Reader
	slots   chan struct{}
	waiting atomic.Int64
	queue   int64
	// evals counts argon2id evaluations; tests use it to show that the
	// unknown-user and wrong-password paths do the same work.
	evals atomic.Int64
	// running and peak count concurrent evaluations; peak is what bounds
	// memory (peak × m), and the load test checks it.
	running, peak atomic.Int64
	// maxWait bounds how long a request waits in the queue.
	maxWait time.Duration
}

func newHasher(p Argon2Params, slots, queue int, rnd io.Reader) *hasher {
	return &hasher{params: p, rand: rnd, slots: make(chan struct{}, slots), queue: int64(queue), maxWait: 10 * time.Second}
}

// acquire takes an argon2id slot, waiting in the bounded queue; it fails
// with ErrBusy at once when the queue is full.
func (h *hasher) acquire(ctx context.Context) (release func(), err error) {
	select {
	case h.slots <- struct{}{}:
		return func() { <-h.slots }, nil
	default:
	}
	if h.waiting.Add(1) > h.queue {
		h.waiting.Add(-1)
		return nil, ErrBusy
	}
	defer h.waiting.Add(-1)
	t := time.NewTimer(h.maxWait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return func() { <-h.slots }, nil
	case <-ctx.Done():
		return nil, ErrBusy
	case <-t.C:
		return nil, ErrBusy
	}
}

func (h *hasher) key(pw []byte, salt []byte, p Argon2Params, n int) []byte {
	h.evals.Add(1)
	cur := h.running.Add(1)
	defer h.running.Add(-1)
	for p := h.peak.Load(); cur > p && !h.peak.CompareAndSwap(p, cur); p = h.peak.Load() {
	}
	return argon2.IDKey(pw, salt, p.Time, p.MemoryKiB, p.Threads, uint32(n))
}

// hash returns the PHC string of pw (already normalised) with a fresh salt.
// The caller holds a slot.
func (h *hasher) hash(pw string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := io.ReadFull(h.rand, salt); err != nil {
		return "", fmt.Errorf("auth: reading randomness: %w", err)
	}
	return phc{params: h.params, salt: salt, tag: h.key([]byte(pw), salt, h.params, tagLen)}.String(), nil
}

// dummy returns the PHC string of no password: current parameters, a
// fresh salt and a random tag. Verifying any password against it costs
// exactly what verifying against a real hash costs (one argon2id run with
// the same parameters) and never succeeds (a 256-bit random tag), which is
// all the unknown-user check needs. Building it runs no argon2id: a run at
// start-up would cost its time and leave its 64 MiB in the heap of an idle
// server.
func (h *hasher) dummy() (string, error) {
	salt := make([]byte, saltLen)
	tag := make([]byte, tagLen)
	if _, err := io.ReadFull(h.rand, salt); err != nil {
		return "", fmt.Errorf("auth: reading randomness: %w", err)
	}
	if _, err := io.ReadFull(h.rand, tag); err != nil {
		return "", fmt.Errorf("auth: reading randomness: %w", err)
	}
	return phc{params: h.params, salt: salt, tag: tag}.String(), nil
}

// verify checks pw against the PHC string encoded in constant time, and
// reports whether the hash should be recomputed with the current
// parameters. The caller holds a slot.
func (h *hasher) verify(pw, encoded string) (ok, stale bool) {
	p, err := parsePHC(encoded)
	if err != nil {
		return false, false
	}
	got := h.key([]byte(pw), p.salt, p.params, len(p.tag))
	ok = subtle.ConstantTimeCompare(got, p.tag) == 1
	return ok, p.params != h.params || len(p.salt) != saltLen || len(p.tag) != tagLen
}
