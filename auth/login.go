package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
)

// LoginRequest is a password login.
type LoginRequest struct {
	Username string
	Password string
	TOTP     string   // required when the user has TOTP enrolled
	Scope    []string // optional narrower capabilities or bundles
	Client   string   // client address (host:port), for throttling and audit
}

// errTOTPReplay is internal: a valid code whose step was already used.
var errTOTPReplay = errors.New("auth: one-time code already used")

// admit applies the client-address bucket and the per-name lockout, and
// records a refused attempt. It is the common front of every password,
// recovery and reset attempt; when it returns nil the caller must call
// the returned done when the attempt is decided.
func (s *Service) admit(ctx context.Context, kind, name, client, event string) (done func(), err error) {
	now := s.now()
	// Refused attempts are recorded at most once per address (or name)
	// every 10 seconds, with the count of those left out, so that a flood
	// cannot turn into a flood of audit writes.
	refuse := func(key, why string, d time.Duration) (func(), error) {
		if ok, n := s.thr.recordRefusal(key, now); ok {
			meta := map[string]string{"retry_after": d.Round(time.Second).String()}
			if n > 0 {
				meta["similar_unrecorded"] = fmt.Sprint(n)
			}
			if err := s.record(ctx, s.event(ctx, event, audit.OutcomeFailure, "user:"+safeName(name), why, client, meta)); err != nil {
				return nil, err
			}
		}
		return nil, &ThrottledError{d}
	}
	if d, ok := s.thr.takeClient(client, now); !ok {
		return refuse("addr\x00"+clientKey(client), "throttled: too many attempts from this address", d)
	}
	if d, ok := s.thr.begin(kind, name, now); !ok {
		return refuse("name\x00"+acctKey(kind, name), "throttled: account locked", d)
	}
	return func() { s.thr.end(kind, name) }, nil
}

// safeName bounds an attacker-chosen name before it reaches the audit log.
func safeName(name string) string {
	if validName(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return fmt.Sprintf("(invalid name %x)", sum[:6])
}

// failed counts a failure for name and records it (and a lockout it
// starts) before the answer.
func (s *Service) failed(ctx context.Context, kind, name, client, event, reason string) error {
	locked, until, disabled := s.thr.fail(kind, name, s.now())
	res := "user:" + safeName(name)
	if err := s.record(ctx, s.event(ctx, event, audit.OutcomeFailure, res, reason, client, nil)); err != nil {
		return err
	}
	if locked {
		meta := map[string]string{"kind": kind}
		why := "locked until " + until.UTC().Format(time.RFC3339)
		if disabled {
			why = fmt.Sprintf("%d consecutive failures: disabled until recovered or unlocked", disableThreshold)
		}
		if err := s.record(ctx, s.event(ctx, audit.EventAuthLockout, audit.OutcomeSuccess, res, why, client, meta)); err != nil {
			return err
		}
	}
	return ErrInvalidCredentials
}

// checkPassword verifies pw (normalised) for name under an argon2id slot,
// against a dummy hash when there is no usable user, so that every path
// costs one argon2id evaluation. It returns the user only when the
// password matched.
func (s *Service) checkPassword(ctx context.Context, name, pw string) (u *userRecord, stale bool, err error) {
	release, err := s.hasher.acquire(ctx)
	if err != nil {
		return nil, false, err
	}
	defer release()
	if validName(name) {
		if err := s.db.View(func(tx *bbolt.Tx) error {
			u, err = getUser(tx, name)
			return err
		}); err != nil {
			return nil, false, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	target, real := s.dummy, false
	if u != nil && !u.Disabled && u.Hash != "" {
		target, real = u.Hash, true
	}
	ok, stale := s.hasher.verify(pw, target)
	if !ok || !real {
		return nil, false, nil
	}
	return u, stale, nil
}

// Login checks a password (and TOTP code) and issues a session. Errors:
// *ThrottledError (429), ErrInvalidCredentials (401) for every kind of
// wrong or unknown, ErrBusy (503), ErrUnavailable (503), a *PolicyError
// with RuleTooLong (413) for an oversized password, *CapsError for a
// malformed scope.
func (s *Service) Login(ctx context.Context, req LoginRequest) (*Session, error) {
	pw, err := normalizePassword(req.Password)
	if err != nil {
		var pe *PolicyError
		if errors.As(err, &pe) && pe.Rule == RuleTooLong {
			return nil, err
		}
		pw = "" // invalid text: verified (and failed) like any wrong password
	}
	if len(req.Scope) > 0 {
		if _, err := s.policy.Load().Expand(req.Scope); err != nil {
			return nil, &CapsError{err}
		}
	}
	name := canonicalName(req.Username)
	done, err := s.admit(ctx, kindLogin, name, req.Client, audit.EventAuthLogin)
	if err != nil {
		return nil, err
	}
	defer done()
	u, stale, err := s.checkPassword(ctx, name, pw)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return nil, s.failed(ctx, kindLogin, name, req.Client, audit.EventAuthLogin, "wrong password or unknown user")
	}
	var rehash string
	if stale { // parameters upgraded on the next successful login (ASVS 5.0 V11.4.2)
		if rehash, err = s.hashPassword(ctx, req.Password); err != nil {
			rehash = "" // busy: upgrade on a later login
		}
	}
	caps, err := s.userCaps(u)
	if err != nil {
		return nil, err
	}
	if caps, err = s.narrow(caps, req.Scope); err != nil {
		return nil, &CapsError{err}
	}
	var sess *Session
	var h [32]byte
	var lt *liveToken
	var evicted [][32]byte
	uctx := authz.WithPrincipal(ctx, &authz.Principal{ID: "user:" + name}) // the user acts from here on
	err = s.commit(ctx, func(tx *bbolt.Tx) ([]audit.Event, error) {
		cur, err := getUser(tx, name)
		if err != nil {
			return nil, err
		}
		// The password changed, or the user was disabled, since it was read.
		if cur == nil || cur.Disabled || cur.Hash != u.Hash {
			return nil, ErrInvalidCredentials
		}
		mfa := false
		if cur.TOTPSecret != "" {
			step, ok := matchTOTP(cur.TOTPSecret, req.TOTP, s.now(), cur.TOTPLastStep)
			if !ok {
				return nil, errTOTPReplay
			}
			cur.TOTPLastStep, mfa = step, true
		}
		if rehash != "" {
			cur.Hash = rehash
		}
		cur.Throttle = throttleRecord{}
		if err := putUser(tx, cur); err != nil {
			return nil, err
		}
		var capEvs []audit.Event
		if evicted, capEvs, err = s.capSessionsTx(uctx, tx, name, req.Client); err != nil {
			return nil, err
		}
		var ev audit.Event
		sess, h, lt, ev, err = s.issueTx(uctx, tx, grant{user: name, caps: caps, authTime: s.now().UTC(), mfa: mfa, method: "password", client: req.Client})
		meta := map[string]string{"method": "password", "mfa": fmt.Sprint(mfa)}
		if rehash != "" {
			meta["rehashed"] = "true"
		}
		login := s.event(uctx, audit.EventAuthLogin, audit.OutcomeSuccess, "user:"+name, "", req.Client, meta)
		return append([]audit.Event{login}, append(capEvs, ev)...), err
	}, s.publishing(&h, &lt, &evicted))
	if errors.Is(err, errTOTPReplay) || errors.Is(err, ErrInvalidCredentials) {
		return nil, s.failed(ctx, kindLogin, name, req.Client, audit.EventAuthLogin, "wrong or reused one-time code")
	}
	if err != nil {
		return nil, err
	}
	s.thr.reset(kindLogin, name)
	s.thr.refundClient(req.Client)
	return sess, nil
}

// RecoverRequest sets a new password with a recovery code.
type RecoverRequest struct {
	Username     string
	RecoveryCode string
	NewPassword  string
	Client       string
}

// Recover consumes one of the user's recovery codes (atomically: of
// concurrent uses of one code exactly one succeeds), sets the new
// password, ends every session of the user and clears its lockout. It is
// throttled like a login, with its own failure count. The new password
// must meet the single-factor length (15) whatever factors are enrolled,
// so that the check, made before the code is verified, reveals nothing
// about the account.
func (s *Service) Recover(ctx context.Context, req RecoverRequest) error {
	name := canonicalName(req.Username)
	if err := CheckPassword(req.NewPassword, name, false); err != nil {
		return err
	}
	done, err := s.admit(ctx, kindRecover, name, req.Client, audit.EventAuthRecover)
	if err != nil {
		return err
	}
	defer done()
	code := normalizeRecoveryCode(req.RecoveryCode)
	release, err := s.hasher.acquire(ctx)
	if err != nil {
		return err
	}
	var u *userRecord
	if validName(name) {
		if err := s.db.View(func(tx *bbolt.Tx) error {
			u, err = getUser(tx, name)
			return err
		}); err != nil {
			release()
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	target, slot := s.dummy, -1
	if u != nil && !u.Disabled && code != "" {
		for i, sl := range u.Recovery {
			if subtle.ConstantTimeCompare([]byte(sl.Locator), []byte(code[:4])) == 1 {
				target, slot = sl.Hash, i
			}
		}
	}
	ok, _ := s.hasher.verify(code, target)
	release()
	if !ok || slot < 0 || code == "" {
		return s.failed(ctx, kindRecover, name, req.Client, audit.EventAuthRecover, "wrong recovery code or unknown user")
	}
	used := u.Recovery[slot]
	return s.setNewPassword(ctx, name, req.NewPassword, req.Client, "recovery code", func(cur *userRecord) bool {
		i := -1
		for j, sl := range cur.Recovery {
			if sl == used {
				i = j
			}
		}
		if i < 0 {
			return false // consumed by a concurrent request
		}
		cur.Recovery = append(cur.Recovery[:i], cur.Recovery[i+1:]...)
		return true
	})
}

// ResetPassword sets a new password with an admin-issued reset code (single
// use, short-lived), ends every session of the user and clears its
// lockout. Throttled like Recover.
func (s *Service) ResetPassword(ctx context.Context, username, code, newPassword, client string) error {
	username = canonicalName(username)
	if err := CheckPassword(newPassword, username, false); err != nil {
		return err
	}
	done, err := s.admit(ctx, kindRecover, username, client, audit.EventAuthRecover)
	if err != nil {
		return err
	}
	defer done()
	sum := sha256.Sum256([]byte(code))
	err = s.setNewPassword(ctx, username, newPassword, client, "reset code", func(cur *userRecord) bool {
		r := cur.Reset
		if r == nil || cur.Disabled || !s.now().Before(r.Expires) || subtle.ConstantTimeCompare(r.Hash, sum[:]) != 1 {
			return false
		}
		cur.Reset = nil
		return true
	})
	if errors.Is(err, ErrInvalidCredentials) {
		return s.failed(ctx, kindRecover, username, client, audit.EventAuthRecover, "wrong or expired reset code, or unknown user")
	}
	return err
}

// setNewPassword hashes pw and, in one transaction, lets consume check and
// spend the credential, sets the hash, ends every session of the user and
// records auth.recover, auth.password_change and token.revoke.
func (s *Service) setNewPassword(ctx context.Context, name, pw, client, how string, consume func(*userRecord) bool) error {
	hash, err := s.hashPassword(ctx, pw)
	if err != nil {
		return err
	}
	var hashes [][32]byte
	err = s.commit(ctx, func(tx *bbolt.Tx) ([]audit.Event, error) {
		cur, err := getUser(tx, name)
		if err != nil {
			return nil, err
		}
		if !validName(name) || cur == nil || !consume(cur) {
			return nil, ErrInvalidCredentials
		}
		cur.Hash, cur.PasswordChanged, cur.Throttle = hash, s.now().UTC(), throttleRecord{}
		if err := putUser(tx, cur); err != nil {
			return nil, err
		}
		var n int
		if hashes, n, err = revokeTx(tx, revokeUser(name)); err != nil {
			return nil, err
		}
		res := "user:" + name
		uctx := authz.WithPrincipal(ctx, &authz.Principal{ID: res})
		return []audit.Event{
			s.event(uctx, audit.EventAuthRecover, audit.OutcomeSuccess, res, "password set with a "+how, client, map[string]string{"codes_left": fmt.Sprint(len(cur.Recovery))}),
			s.event(uctx, audit.EventAuthPasswordChange, audit.OutcomeSuccess, res, "via "+how, client, nil),
			s.event(uctx, audit.EventTokenRevoke, audit.OutcomeSuccess, res, "password reset", client, map[string]string{"count": fmt.Sprint(n)}),
		}, nil
	}, s.dropping(&hashes))
	if err != nil {
		return err
	}
	s.thr.reset(kindLogin, name)
	s.thr.reset(kindRecover, name)
	s.thr.refundClient(client)
	return nil
}

// SetPassword changes name's password given the current one (ASVS 5.0
// V6.2.3), with the TOTP code when one is enrolled. Every session of the
// user ends except the family keepFamily (the session making the change;
// empty ends all). An admin cannot set a password without the current
// one: that is what ResetCode is for (ASVS 5.0 V6.4.6). The check of the
// old password is throttled like a login.
func (s *Service) SetPassword(ctx context.Context, name, oldPassword, newPassword, totpCode, keepFamily, client string) error {
	old, err := normalizePassword(oldPassword)
	if err != nil {
		return err
	}
	done, err := s.admit(ctx, kindLogin, name, client, audit.EventAuthPasswordChange)
	if err != nil {
		return err
	}
	defer done()
	u, _, err := s.checkPassword(ctx, name, old)
	if err != nil {
		return err
	}
	if u == nil {
		return s.failed(ctx, kindLogin, name, client, audit.EventAuthPasswordChange, "wrong current password")
	}
	if err := CheckPassword(newPassword, name, u.TOTPSecret != ""); err != nil {
		return err
	}
	hash, err := s.hashPassword(ctx, newPassword)
	if err != nil {
		return err
	}
	var hashes [][32]byte
	sel := revokeSel{user: name, exceptFamily: keepFamily}
	err = s.commit(ctx, func(tx *bbolt.Tx) ([]audit.Event, error) {
		cur, err := getUser(tx, name)
		if err != nil {
			return nil, err
		}
		if cur == nil || cur.Disabled || cur.Hash != u.Hash {
			return nil, ErrInvalidCredentials
		}
		if cur.TOTPSecret != "" {
			step, ok := matchTOTP(cur.TOTPSecret, totpCode, s.now(), cur.TOTPLastStep)
			if !ok {
				return nil, errTOTPReplay
			}
			cur.TOTPLastStep = step
		}
		cur.Hash, cur.PasswordChanged = hash, s.now().UTC()
		if err := putUser(tx, cur); err != nil {
			return nil, err
		}
		var n int
		if hashes, n, err = revokeTx(tx, sel); err != nil {
			return nil, err
		}
		res := "user:" + name
		return []audit.Event{
			s.event(ctx, audit.EventAuthPasswordChange, audit.OutcomeSuccess, res, "with the current password", client, nil),
			s.event(ctx, audit.EventTokenRevoke, audit.OutcomeSuccess, res, "password changed", client, map[string]string{"count": fmt.Sprint(n)}),
		}, nil
	}, s.dropping(&hashes))
	if errors.Is(err, errTOTPReplay) || errors.Is(err, ErrInvalidCredentials) {
		return s.failed(ctx, kindLogin, name, client, audit.EventAuthPasswordChange, "wrong or reused one-time code")
	}
	if err != nil {
		return err
	}
	s.thr.reset(kindLogin, name)
	return nil
}

// AllowAttempt is the throttling front for logins made elsewhere (OIDC):
// it takes one attempt from the client address's bucket and checks the
// lockout of username (which may be empty when not yet known). When ok is
// false, answer 429 with Retry-After retryAfter.
func (s *Service) AllowAttempt(clientAddr, username string) (retryAfter time.Duration, ok bool) {
	now := s.now()
	if d, ok := s.thr.takeClient(clientAddr, now); !ok {
		return d, false
	}
	if username != "" {
		if d := s.thr.lockedFor(kindLogin, canonicalName(username), now); d > 0 {
			return d, false
		}
	}
	return 0, true
}

// RecordFailure counts a failed login for username made elsewhere (OIDC)
// toward the same lockout as password logins.
func (s *Service) RecordFailure(username string) {
	if username != "" {
		s.thr.fail(kindLogin, canonicalName(username), s.now())
	}
}

// RecordSuccess resets username's failure count after a login made
// elsewhere, and gives the client's attempt back.
func (s *Service) RecordSuccess(clientAddr, username string) {
	if username != "" {
		s.thr.reset(kindLogin, canonicalName(username))
	}
	s.thr.refundClient(clientAddr)
}

// Allow, Failure and Success are AllowAttempt, RecordFailure and
// RecordSuccess under the names of auth/oidc's Throttle interface, so that
// the Service can be passed to it as is.
func (s *Service) Allow(client, username string) (time.Duration, bool) {
	return s.AllowAttempt(client, username)
}

// Failure counts a failed OIDC login for username (see Allow).
func (s *Service) Failure(client, username string) { s.RecordFailure(username) }

// Success clears username's failures after an OIDC login (see Allow).
func (s *Service) Success(client, username string) { s.RecordSuccess(client, username) }
