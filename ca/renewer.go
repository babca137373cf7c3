package ca

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"time"
)

// Renewer keeps a device certificate fresh: it renews at about two thirds
// of the certificate's lifetime and, when a renewal fails, retries with
// exponential backoff and full jitter (as AWS's "Exponential Backoff and
// Jitter" recommends) so that many devices do not retry in step. Every
// source of time and randomness is a field, so tests run it without
// sleeping.
type Renewer struct {
	// Renew renews once and returns the new certificate's validity.
	Renew func(ctx context.Context) (notBefore, notAfter time.Time, err error)
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// After waits like time.After. Default time.After.
	After func(time.Duration) <-chan time.Time
	// Rand returns a uniform float in [0, 1). Default crypto/rand.
	Rand func() float64
	// MinBackoff and MaxBackoff bound the retry delay. Defaults 10s and 1h.
	MinBackoff, MaxBackoff time.Duration
	// Permanent, when set, tells a refusal that retrying cannot fix (the
	// device was revoked); Run then returns it.
	Permanent func(error) bool
	// OnRenew and OnError, when set, are told about each attempt.
	OnRenew func(notAfter time.Time)
	OnError func(err error, retryIn time.Duration)
}

// ErrCertificateExpired is returned by Run when the certificate expired
// before a renewal succeeded: an expired certificate cannot authenticate a
// renewal, so the device must enroll again.
var ErrCertificateExpired = errors.New("ca: the device certificate expired before it could be renewed; enroll again with a new token")

// NextRenewal is when a certificate valid from notBefore to notAfter
// should be renewed: at two thirds of its lifetime.
func NextRenewal(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * 2 / 3)
}

// Backoff is the delay before retry number attempt (1, 2, …): a random
// duration between half and all of min·2^(attempt-1), capped at max, given
// r uniform in [0, 1).
func Backoff(attempt int, r float64, min, max time.Duration) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + time.Duration(r*float64(d/2))
}

func cryptoFloat() float64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0.5
	}
	return float64(binary.BigEndian.Uint64(b[:])>>11) / (1 << 53)
}

// Run renews the certificate valid from notBefore to notAfter, and each
// one after it, until ctx ends.
func (r *Renewer) Run(ctx context.Context, notBefore, notAfter time.Time) error {
	now, after, rnd := r.Now, r.After, r.Rand
	if now == nil {
		now = time.Now
	}
	if after == nil {
		after = time.After
	}
	if rnd == nil {
		rnd = cryptoFloat
	}
	minB, maxB := r.MinBackoff, r.MaxBackoff
	if minB <= 0 {
		minB = 10 * time.Second
	}
	if maxB < minB {
		maxB = max(time.Hour, minB)
	}
	attempt := 0
	wait := NextRenewal(notBefore, notAfter).Sub(now())
	for {
		if wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-after(wait):
			}
		}
		if !now().Before(notAfter) {
			return ErrCertificateExpired
		}
		nb, na, err := r.Renew(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if r.Permanent != nil && r.Permanent(err) {
				return err
			}
			attempt++
			wait = Backoff(attempt, rnd(), minB, maxB)
			if left := notAfter.Sub(now()); wait > left {
				wait = left // never wait past expiry; Run gives up there
			}
			if r.OnError != nil {
				r.OnError(err, wait)
			}
			continue
		}
		attempt = 0
		notAfter = na
		if r.OnRenew != nil {
			r.OnRenew(na)
		}
		wait = NextRenewal(nb, na).Sub(now())
	}
}
