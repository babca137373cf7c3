package auth

// Lockout across replicas. Every password, recovery, reset and passkey
// attempt that names an account is charged in the store before its secret
// is checked: one Update reads the name's lockoutRecord, refuses when it is
// locked, and otherwise counts the attempt as a failure (and starts the
// lockout that failure would start) — all before the argon2id check. A
// success clears the record in the transaction that issues its session; an
// attempt that ends undecided (the hasher is busy, the store or the log is
// down) gives its charge back. So concurrent guesses, on one replica or
// spread over many, cannot get more attempts to the password check than
// the schedule allows one at a time (NIST SP 800-63B-4 §3.2.2: the limit
// holds for consecutive failed attempts on the account, wherever they come
// from), and no failure is lost: on bbolt one writer at a time, on
// PostgreSQL SERIALIZABLE (PostgreSQL 15 manual §13.2.3) make each charge a
// read-check-write that sees every earlier one.
//
// Names that are not users are charged exactly like users (one Update,
// the same record, the same answers), so that a locked unknown name and a
// locked account look alike (OWASP ASVS 5.0 V6.3.8). Their records are
// pruned a day after their last failure, and beyond maxTrackedNames the
// oldest go first. Login, recovery and passkey attempts count under
// separate kinds, so that an attacker who keeps the password locked cannot
// also block recovery codes or passkeys with the same failures.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/store"
)

// lockoutRecord is the failure count of one name under one kind (login,
// recover, passkey), stored in auth.lockout under kind \x00 name. Failures
// includes attempts charged and not yet decided.
type lockoutRecord struct {
	Failures    int       `json:"failures,omitempty"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	Disabled    bool      `json:"disabled,omitempty"`
	Last        time.Time `json:"last"` // the last attempt charged
}

// pruneEvery is how often flush prunes the lockout records of non-users.
const pruneEvery = 5 * time.Minute

func lockoutKey(kind, name string) []byte { return []byte(acctKey(kind, name)) }

func getLockout(tx store.Tx, kind, name string) (lockoutRecord, error) {
	var r lockoutRecord
	v := tx.Bucket(bucketLockout).Get(lockoutKey(kind, name))
	if v == nil {
		return r, nil
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("auth: lockout record of %q: corrupt: %w", safeName(name), err)
	}
	return r, nil
}

func putLockout(tx store.Tx, kind, name string, r lockoutRecord) error {
	return putJSON(tx, bucketLockout, lockoutKey(kind, name), r)
}

// clearLockoutTx deletes name's records of kinds (a success, an unlock, a
// recovery).
func clearLockoutTx(tx store.Tx, name string, kinds ...string) error {
	for _, k := range kinds {
		if err := tx.Bucket(bucketLockout).Delete(lockoutKey(k, name)); err != nil {
			return err
		}
	}
	return nil
}

// lockedFor reports how long r refuses attempts at now (0: it does not).
// A name whose password login is disabled answers an hour at a time.
func (r lockoutRecord) lockedFor(now time.Time) time.Duration {
	if r.Disabled {
		return lockoutMax
	}
	if now.Before(r.LockedUntil) {
		return r.LockedUntil.Sub(now)
	}
	return 0
}

// schedule sets the lockout r's failure count calls for at now, and
// reports whether there is one: 5 consecutive failures lock for a minute,
// doubling per further failure up to an hour; 100 disable password login
// until a recovery or an unlock.
func (r *lockoutRecord) schedule(now time.Time) bool {
	switch {
	case r.Failures >= disableThreshold:
		r.Disabled = true
		return true
	case r.Failures >= lockoutThreshold:
		d := min(lockoutBase<<min(r.Failures-lockoutThreshold, 10), lockoutMax)
		r.LockedUntil = now.Add(d)
		return true
	}
	return false
}

// errLocked carries a refusal out of the charging transaction.
type errLocked struct{ d time.Duration }

func (e *errLocked) Error() string { return "auth: locked" }

// attempt is one admitted attempt on a name: charged as a failure until
// it is decided.
type attempt struct {
	s                         *Service
	kind, name, client, event string
	prev, charged             lockoutRecord
	lockStarts                bool // the charge started a lockout (it stands if the attempt fails)
	decided                   bool
}

// admit applies the client-address bucket and then charges the attempt to
// name's lockout record in the store, refusing (and recording the refusal)
// when the address or the name is throttled. It is the common front of
// every password, recovery and reset attempt; when it returns an attempt,
// the caller decides it with fail or ok, and defers end, which gives the
// charge back if neither happened.
func (s *Service) admit(ctx context.Context, kind, name, client, event string) (*attempt, error) {
	now := s.now()
	if d, ok := s.thr.takeClient(client, now); !ok {
		return nil, s.refuse(ctx, "addr\x00"+clientKey(client), event, "user:"+safeName(name), client, "throttled: too many attempts from this address", d, nil)
	}
	a, err := s.charge(ctx, kind, name, now)
	var locked *errLocked
	if errors.As(err, &locked) {
		return nil, s.refuse(ctx, "name\x00"+acctKey(kind, name), event, "user:"+safeName(name), client, "throttled: account locked", locked.d, nil)
	}
	if err != nil {
		return nil, err
	}
	a.client, a.event = client, event
	return a, nil
}

// charge counts one attempt on name as a failure, in one transaction that
// first refuses it (errLocked) if name is locked.
func (s *Service) charge(ctx context.Context, kind, name string, now time.Time) (*attempt, error) {
	a := &attempt{s: s, kind: kind, name: name}
	err := s.update(ctx, func(tx store.Tx) error {
		r, err := getLockout(tx, kind, name)
		if err != nil {
			return err
		}
		if d := r.lockedFor(now); d > 0 {
			return &errLocked{d}
		}
		a.prev = r
		r.Failures++
		r.Last = now.UTC()
		a.lockStarts = r.schedule(now)
		a.charged = r
		return putLockout(tx, kind, name, r)
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// refuse records a throttled attempt (at most once per key every 10
// seconds, with the count of those left out, so that a flood cannot turn
// into a flood of audit writes) and returns the ThrottledError.
func (s *Service) refuse(ctx context.Context, key, event, resource, client, why string, d time.Duration, meta map[string]string) error {
	if ok, n := s.thr.recordRefusal(key, s.now()); ok {
		if meta == nil {
			meta = map[string]string{}
		}
		meta["retry_after"] = d.Round(time.Second).String()
		if n > 0 {
			meta["similar_unrecorded"] = fmt.Sprint(n)
		}
		if err := s.record(ctx, s.event(ctx, event, audit.OutcomeFailure, resource, why, client, meta)); err != nil {
			return err
		}
	}
	return &ThrottledError{d}
}

// fail decides the attempt as a failure (already counted by its charge)
// and records it, and the lockout it starts, before the answer.
func (a *attempt) fail(ctx context.Context, reason string) error {
	a.decided = true
	s := a.s
	res := "user:" + safeName(a.name)
	if err := s.record(ctx, s.event(ctx, a.event, audit.OutcomeFailure, res, reason, a.client, nil)); err != nil {
		return err
	}
	if a.lockStarts {
		meta := map[string]string{"kind": a.kind}
		why := "locked until " + a.charged.LockedUntil.UTC().Format(time.RFC3339)
		if a.charged.Disabled {
			why = fmt.Sprintf("%d consecutive failures: disabled until recovered or unlocked", disableThreshold)
		}
		if err := s.record(ctx, s.event(ctx, audit.EventAuthLockout, audit.OutcomeSuccess, res, why, a.client, meta)); err != nil {
			return err
		}
	}
	return ErrInvalidCredentials
}

// ok decides the attempt as a success; the caller cleared the record in
// the transaction that acted on it.
func (a *attempt) ok() { a.decided = true }

// end gives the charge back when the attempt was not decided (the hasher
// was busy, the request was cancelled, the store or the log failed, the
// new password was refused), so that such attempts count for nothing.
func (a *attempt) end(ctx context.Context) {
	if a.decided {
		return
	}
	s := a.s
	now := s.now()
	err := s.update(context.WithoutCancel(ctx), func(tx store.Tx) error {
		r, err := getLockout(tx, a.kind, a.name)
		if err != nil || r.Failures == 0 {
			return err // cleared meanwhile (a success or an unlock)
		}
		r.Failures--
		if a.lockStarts {
			if a.charged.Disabled && !a.prev.Disabled && r.Failures < disableThreshold {
				r.Disabled = false
			}
			if r.LockedUntil.Equal(a.charged.LockedUntil) {
				r.LockedUntil = a.prev.LockedUntil
			}
		}
		if r.Failures == 0 && !r.Disabled && r.lockedFor(now) == 0 {
			return tx.Bucket(bucketLockout).Delete(lockoutKey(a.kind, a.name))
		}
		return putLockout(tx, a.kind, a.name, r)
	})
	if err != nil {
		s.log.Warn().Err(err).Str("kind", a.kind).Msg("auth: could not give back the charge of an undecided attempt")
	}
}

// lockedFor reports how long name is locked out under kind (0 if it is
// not, or if the store cannot say: the attempt is then charged, which
// fails closed).
func (s *Service) lockedFor(ctx context.Context, kind, name string, now time.Time) (time.Duration, error) {
	var d time.Duration
	err := s.view(ctx, func(tx store.Tx) error {
		r, err := getLockout(tx, kind, name)
		d = r.lockedFor(now)
		return err
	})
	return d, err
}

// migrateThrottle moves the lockout state that hearth kept in user
// records before the store seam (userRecord.Throttle, PasskeyThrottle) to
// auth.lockout, once: a data dir written by an older hearth keeps its
// lockouts.
func (s *Service) migrateThrottle(ctx context.Context) error {
	need := false
	if err := s.view(ctx, func(tx store.Tx) error {
		need = false
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u userRecord
			if json.Unmarshal(v, &u) == nil && (u.Throttle != throttleRecord{} || u.PasskeyThrottle != throttleRecord{}) {
				need = true
			}
			return nil
		})
	}); err != nil || !need {
		return err
	}
	now := s.now().UTC()
	return s.update(ctx, func(tx store.Tx) error {
		var users []*userRecord
		err := tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u userRecord
			if json.Unmarshal(v, &u) == nil && (u.Throttle != throttleRecord{} || u.PasskeyThrottle != throttleRecord{}) {
				users = append(users, &u)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, u := range users {
			for kind, t := range map[string]throttleRecord{kindLogin: u.Throttle, kindPasskey: u.PasskeyThrottle} {
				if t == (throttleRecord{}) {
					continue
				}
				if cur := tx.Bucket(bucketLockout).Get(lockoutKey(kind, u.Name)); cur != nil {
					continue
				}
				if err := putLockout(tx, kind, u.Name, lockoutRecord{Failures: t.Failures, LockedUntil: t.LockedUntil, Disabled: t.Disabled, Last: now}); err != nil {
					return err
				}
			}
			u.Throttle, u.PasskeyThrottle = throttleRecord{}, throttleRecord{}
			if err := putUser(tx, u); err != nil {
				return err
			}
		}
		return nil
	})
}

// pruneLockouts deletes, every pruneEvery, the lockout records of names
// that are not users once a day has passed since their last failure and
// no lockout runs (a disabled one stays), and beyond maxTrackedNames the
// oldest of them, so that a flood of invented names cannot grow the store
// without bound. Only in that second case could a locked unknown name come
// to answer unlike a locked real one; it takes more than 100,000 distinct
// failing names within a day.
func (s *Service) pruneLockouts(ctx context.Context, now time.Time) error {
	if !s.lastPrune.IsZero() && now.Sub(s.lastPrune) < pruneEvery {
		return nil
	}
	s.lastPrune = now
	type cand struct {
		key  []byte
		last time.Time
	}
	var old, rest []cand
	err := s.view(ctx, func(tx store.Tx) error {
		old, rest = old[:0], rest[:0]
		users := tx.Bucket(bucketUsers)
		return tx.Bucket(bucketLockout).ForEach(func(k, v []byte) error {
			_, name, _ := strings.Cut(string(k), "\x00")
			if users.Get([]byte(name)) != nil {
				return nil
			}
			var r lockoutRecord
			if json.Unmarshal(v, &r) != nil {
				old = append(old, cand{slices.Clone(k), time.Time{}})
				return nil
			}
			c := cand{slices.Clone(k), r.Last}
			if !r.Disabled && r.lockedFor(now) == 0 && now.Sub(r.Last) > forgetNamesAfter {
				old = append(old, c)
			} else {
				rest = append(rest, c)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	if len(rest) > maxTrackedNames {
		slices.SortFunc(rest, func(a, b cand) int { return a.last.Compare(b.last) })
		old = append(old, rest[:len(rest)-maxTrackedNames*9/10]...)
	}
	if len(old) == 0 {
		return nil
	}
	return s.update(ctx, func(tx store.Tx) error {
		b := tx.Bucket(bucketLockout)
		for _, c := range old {
			v := b.Get(c.key)
			var r lockoutRecord
			if v == nil || json.Unmarshal(v, &r) == nil && !r.Last.Equal(c.last) {
				continue // charged again since it was read
			}
			if err := b.Delete(c.key); err != nil {
				return err
			}
		}
		return nil
	})
}
