package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store"
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

// safeName bounds an attacker-chosen name before it reaches the audit log.
func safeName(name string) string {
	if validName(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return fmt.Sprintf("(invalid name %x)", sum[:6])
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
		if err := s.view(ctx, func(tx store.Tx) error {
			u, err = getUser(tx, name)
			return err
		}); err != nil {
			return nil, false, err
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
	att, err := s.admit(ctx, kindLogin, name, req.Client, audit.EventAuthLogin)
	if err != nil {
		return nil, err
	}
	defer att.end(ctx)
	u, stale, err := s.checkPassword(ctx, name, pw)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return nil, att.fail(ctx, "wrong password or unknown user")
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
	err = s.commit(ctx, func(tx store.Tx) ([]audit.Event, error) {
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
		if err := putUser(tx, cur); err != nil {
			return nil, err
		}
		if err := clearLockoutTx(tx, name, kindLogin); err != nil {
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
		return nil, att.fail(ctx, "wrong or reused one-time code")
	}
	if err != nil {
		return nil, err
	}
	att.ok()
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
	att, err := s.admit(ctx, kindRecover, name, req.Client, audit.EventAuthRecover)
	if err != nil {
		return err
	}
	defer att.end(ctx)
	code := normalizeRecoveryCode(req.RecoveryCode)
	release, err := s.hasher.acquire(ctx)
	if err != nil {
		return err
	}
	var u *userRecord
	if validName(name) {
		if err := s.view(ctx, func(tx store.Tx) error {
			u, err = getUser(tx, name)
			return err
		}); err != nil {
			release()
			return err
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
		return att.fail(ctx, "wrong recovery code or unknown user")
	}
	used := u.Recovery[slot]
	return s.setNewPassword(ctx, att, req.NewPassword, "recovery code", "recovery code already used", func(cur *userRecord) bool {
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
	att, err := s.admit(ctx, kindRecover, username, client, audit.EventAuthRecover)
	if err != nil {
		return err
	}
	defer att.end(ctx)
	sum := sha256.Sum256([]byte(code))
	return s.setNewPassword(ctx, att, newPassword, "reset code", "wrong or expired reset code, or unknown user", func(cur *userRecord) bool {
		r := cur.Reset
		if r == nil || cur.Disabled || !s.now().Before(r.Expires) || subtle.ConstantTimeCompare(r.Hash, sum[:]) != 1 {
			return false
		}
		cur.Reset = nil
		return true
	})
}

// setNewPassword hashes pw and, in one transaction, lets consume check and
// spend the credential (once: of concurrent uses, on any replica, one
// transaction sees it unspent), sets the hash, ends every session of the
// user, clears its lockouts and records auth.recover, auth.password_change
// and token.revoke. A credential consume refuses decides att as a failure
// for reason.
func (s *Service) setNewPassword(ctx context.Context, att *attempt, pw, how, reason string, consume func(*userRecord) bool) error {
	name, client := att.name, att.client
	hash, err := s.hashPassword(ctx, pw)
	if err != nil {
		return err
	}
	var hashes [][32]byte
	err = s.commit(ctx, func(tx store.Tx) ([]audit.Event, error) {
		cur, err := getUser(tx, name)
		if err != nil {
			return nil, err
		}
		if !validName(name) || cur == nil || !consume(cur) {
			return nil, ErrInvalidCredentials
		}
		cur.Hash, cur.PasswordChanged = hash, s.now().UTC()
		if err := putUser(tx, cur); err != nil {
			return nil, err
		}
		if err := clearLockoutTx(tx, name, kindLogin, kindRecover); err != nil {
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
	if errors.Is(err, ErrInvalidCredentials) {
		return att.fail(ctx, reason)
	}
	if err != nil {
		return err
	}
	att.ok()
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
	att, err := s.admit(ctx, kindLogin, name, client, audit.EventAuthPasswordChange)
	if err != nil {
		return err
	}
	defer att.end(ctx)
	u, _, err := s.checkPassword(ctx, name, old)
	if err != nil {
		return err
	}
	if u == nil {
		return att.fail(ctx, "wrong current password")
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
	err = s.commit(ctx, func(tx store.Tx) ([]audit.Event, error) {
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
		if err := clearLockoutTx(tx, name, kindLogin); err != nil {
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
		return att.fail(ctx, "wrong or reused one-time code")
	}
	if err != nil {
		return err
	}
	att.ok()
	return nil
}

// AllowAttempt is the throttling front for logins made elsewhere (OIDC):
// it takes one attempt from the client address's bucket and checks the
// lockout of username (which may be empty when not yet known) in the
// store. When ok is false, answer 429 with Retry-After retryAfter; a store
// that cannot be read refuses for a second (fail closed).
func (s *Service) AllowAttempt(clientAddr, username string) (retryAfter time.Duration, ok bool) {
	now := s.now()
	if d, ok := s.thr.takeClient(clientAddr, now); !ok {
		return d, false
	}
	if username != "" {
		d, err := s.lockedFor(context.Background(), kindLogin, canonicalName(username), now)
		if err != nil {
			s.log.Warn().Err(err).Msg("auth: reading a lockout")
			return time.Second, false
		}
		if d > 0 {
			return d, false
		}
	}
	return 0, true
}

// RecordFailure counts a failed login for username made elsewhere (OIDC)
// toward the same lockout as password logins, in the store.
func (s *Service) RecordFailure(username string) {
	if username == "" {
		return
	}
	name, now := canonicalName(username), s.now()
	err := s.update(context.Background(), func(tx store.Tx) error {
		r, err := getLockout(tx, kindLogin, name)
		if err != nil {
			return err
		}
		r.Failures++
		r.Last = now.UTC()
		r.schedule(now)
		return putLockout(tx, kindLogin, name, r)
	})
	if err != nil {
		s.log.Warn().Err(err).Msg("auth: counting an OIDC login failure")
	}
}

// RecordSuccess resets username's failure count after a login made
// elsewhere, and gives the client's attempt back.
func (s *Service) RecordSuccess(clientAddr, username string) {
	if username != "" {
		name := canonicalName(username)
		if err := s.update(context.Background(), func(tx store.Tx) error { return clearLockoutTx(tx, name, kindLogin) }); err != nil {
			s.log.Warn().Err(err).Msg("auth: clearing a lockout after an OIDC login")
		}
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
