package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store"
)

// RecoveryCodeCount is how many recovery codes a user holds after
// regenerating them.
const RecoveryCodeCount = 10

// OwnerPasswordLen is the length of the password `hearth init` generates.
const OwnerPasswordLen = 24

// UserInfo is a user as the admin API lists it; it holds no secret.
type UserInfo struct {
	Name                  string             `json:"name"`
	Caps                  []string           `json:"caps"`
	Capabilities          []authz.Capability `json:"capabilities"`
	Disabled              bool               `json:"disabled"`
	PasswordSet           bool               `json:"password_set"`
	TOTP                  bool               `json:"totp"`
	RecoveryCodesLeft     int                `json:"recovery_codes_left"`
	Failures              int                `json:"failures"`
	LockedUntil           *time.Time         `json:"locked_until,omitempty"`
	PasswordLoginDisabled bool               `json:"password_login_disabled"`
	Created               time.Time          `json:"created"`
	PasswordChanged       *time.Time         `json:"password_changed,omitempty"`
}

// CapsError is returned when granted capability names do not expand.
type CapsError struct{ Err error }

// Error implements error.
func (e *CapsError) Error() string { return e.Err.Error() }

// Unwrap returns the authz error.
func (e *CapsError) Unwrap() error { return e.Err }

// hashPassword normalises and hashes pw under an argon2id slot.
func (s *Service) hashPassword(ctx context.Context, pw string) (string, error) {
	n, err := normalizePassword(pw)
	if err != nil {
		return "", err
	}
	release, err := s.hasher.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	return s.hasher.hash(n)
}

// reservedName is the name of the admin socket's principal (user:local,
// authz.LocalPrincipalID), which no user may take, so that audit entries
// tell the owner at the machine from any account.
const reservedName = "local"

// AddUser creates user name with the granted capability or bundle names.
// An empty password creates the user without one: issue a reset code
// (ResetCode) so that the user chooses their own (ASVS 5.0 V6.4.6).
func (s *Service) AddUser(ctx context.Context, name string, caps []string, password string) error {
	if !validName(name) {
		return ErrBadName
	}
	if name == reservedName {
		return fmt.Errorf("%w; %q is reserved: the admin socket acts as user:%s", ErrBadName, name, name)
	}
	if _, err := s.policy.Load().Expand(caps); err != nil {
		return &CapsError{err}
	}
	var hash string
	if password != "" {
		if err := CheckPassword(password, name, false); err != nil {
			return err
		}
		var err error
		if hash, err = s.hashPassword(ctx, password); err != nil {
			return err
		}
	}
	now := s.now().UTC()
	err := s.commit(ctx, func(tx store.Tx) ([]audit.Event, error) {
		if u, err := getUser(tx, name); err != nil {
			return nil, err
		} else if u != nil {
			return nil, ErrUserExists
		}
		u := &userRecord{Name: name, Caps: slices.Clone(caps), Hash: hash, Created: now}
		if hash != "" {
			u.PasswordChanged = now
		}
		if err := putUser(tx, u); err != nil {
			return nil, err
		}
		return []audit.Event{s.event(ctx, audit.EventUserChange, audit.OutcomeSuccess, "user:"+name, "user added", "", map[string]string{
			"action": "add", "caps": strings.Join(caps, ","), "password_set": fmt.Sprint(hash != ""),
		})}, nil
	})
	return err
}

// CreateOwner creates the owner with system:admin, a generated password
// (24 characters, 120 bits from crypto/rand) and ten recovery codes, and
// returns them to be shown once. It needs no running server (hearth init
// calls it on the database directly).
//
// The generated password is not marked "must change": it is stronger than
// anything a person would choose, and NIST SP 800-63B-4 advises against
// forced changes without evidence of compromise. An owner who wants their
// own runs `hearth user passwd`.
func (s *Service) CreateOwner(ctx context.Context, name string) (password string, recoveryCodes []string, err error) {
	if authz.PrincipalFrom(ctx) == nil {
		ctx = authz.WithPrincipal(ctx, localPrincipal)
	}
	pw, err := s.randomString(15) // 15 bytes = 24 base32 characters
	if err != nil {
		return "", nil, err
	}
	if err := s.AddUser(ctx, name, []string{string(authz.BundleSystemAdmin)}, pw); err != nil {
		return "", nil, err
	}
	codes, err := s.RegenerateRecoveryCodes(ctx, name)
	if err != nil {
		return "", nil, err
	}
	return pw, codes, nil
}

// modifyUser runs fn on user name inside a transaction with audit.
func (s *Service) modifyUser(ctx context.Context, name string, fn func(tx store.Tx, u *userRecord) ([]audit.Event, error), effects ...memEffect) error {
	return s.commit(ctx, func(tx store.Tx) ([]audit.Event, error) {
		u, err := getUser(tx, name)
		if err != nil {
			return nil, err
		}
		if u == nil {
			return nil, ErrNoUser
		}
		evs, err := fn(tx, u)
		if err != nil {
			return nil, err
		}
		return evs, putUser(tx, u)
	}, effects...)
}

// Unlock ends a lockout of name, clears its failure counts (login,
// recovery, passkeys) and re-enables password login after the
// 100-failure limit.
func (s *Service) Unlock(ctx context.Context, name string) error {
	return s.modifyUser(ctx, name, func(tx store.Tx, u *userRecord) ([]audit.Event, error) {
		prev, err := getLockout(tx, kindLogin, name)
		if err != nil {
			return nil, err
		}
		u.Throttle, u.PasskeyThrottle = throttleRecord{}, throttleRecord{}
		if err := clearLockoutTx(tx, name, kindLogin, kindRecover, kindPasskey); err != nil {
			return nil, err
		}
		return []audit.Event{s.event(ctx, audit.EventAuthUnlock, audit.OutcomeSuccess, "user:"+name, "unlocked by an admin", "", map[string]string{
			"failures": fmt.Sprint(prev.Failures), "password_login_disabled": fmt.Sprint(prev.Disabled),
		})}, nil
	})
}

// Disable stops name from logging in and ends all its sessions at once.
func (s *Service) Disable(ctx context.Context, name string) error {
	return s.setDisabled(ctx, name, true)
}

// Enable undoes Disable.
func (s *Service) Enable(ctx context.Context, name string) error {
	return s.setDisabled(ctx, name, false)
}

func (s *Service) setDisabled(ctx context.Context, name string, off bool) error {
	var hashes [][32]byte
	return s.modifyUser(ctx, name, func(tx store.Tx, u *userRecord) ([]audit.Event, error) {
		u.Disabled = off
		action := map[bool]string{true: "disable", false: "enable"}[off]
		evs := []audit.Event{s.event(ctx, audit.EventUserChange, audit.OutcomeSuccess, "user:"+name, "user "+action+"d", "", map[string]string{"action": action})}
		if off {
			var n int
			var err error
			if hashes, n, err = revokeTx(tx, revokeUser(name)); err != nil {
				return nil, err
			}
			evs = append(evs, s.event(ctx, audit.EventTokenRevoke, audit.OutcomeSuccess, "user:"+name, "user disabled", "", map[string]string{"count": fmt.Sprint(n)}))
		}
		return evs, nil
	}, s.dropping(&hashes))
}

// ListUsers lists every user, sorted by name.
func (s *Service) ListUsers(ctx context.Context) ([]UserInfo, error) {
	var out []UserInfo
	now := s.now()
	err := s.view(ctx, func(tx store.Tx) error {
		out = out[:0]
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u userRecord
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("auth: user %q: corrupt record: %w", k, err)
			}
			caps, _ := s.policy.Load().Expand(u.Caps)
			st, err := getLockout(tx, kindLogin, u.Name)
			if err != nil {
				return err
			}
			info := UserInfo{
				Name: u.Name, Caps: u.Caps, Capabilities: caps, Disabled: u.Disabled, PasswordSet: u.Hash != "",
				TOTP: u.TOTPSecret != "", RecoveryCodesLeft: len(u.Recovery), Failures: st.Failures,
				PasswordLoginDisabled: st.Disabled, Created: u.Created,
			}
			if now.Before(st.LockedUntil) {
				t := st.LockedUntil
				info.LockedUntil = &t
			}
			if !u.PasswordChanged.IsZero() {
				t := u.PasswordChanged
				info.PasswordChanged = &t
			}
			out = append(out, info)
			return nil
		})
	})
	return out, err
}

// Recovery codes: 80 bits from crypto/rand as 16 Crockford base32
// characters, shown as XXXX-XXXX-XXXX-XXXX. The first group is a locator
// stored in the clear so that a recovery attempt costs one argon2id
// evaluation, not ten; the whole code is stored only as argon2id, so the 60
// secret bits are hashed with the password hash NIST SP 800-63B-4
// §3.1.2.1 asks for look-up secrets below 112 bits, and attempts are
// throttled like logins. The floor is 50 bits.
var crockford = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// normalizeRecoveryCode uppercases, drops separators and maps the letters
// Crockford base32 treats as digits.
func normalizeRecoveryCode(c string) string {
	if len(c) > 64 {
		return ""
	}
	var b strings.Builder
	for _, r := range strings.ToUpper(c) {
		switch r {
		case '-', ' ':
			continue
		case 'O':
			r = '0'
		case 'I', 'L':
			r = '1'
		}
		b.WriteRune(r)
	}
	s := b.String()
	if len(s) != 16 {
		return ""
	}
	if _, err := crockford.DecodeString(s); err != nil {
		return ""
	}
	return s
}

// RegenerateRecoveryCodes replaces name's recovery codes with ten new ones
// and returns them, formatted, to be shown once.
func (s *Service) RegenerateRecoveryCodes(ctx context.Context, name string) ([]string, error) {
	var codes, shown []string
	seen := map[string]bool{}
	for len(codes) < RecoveryCodeCount {
		b, err := s.randomBytes(10)
		if err != nil {
			return nil, err
		}
		c := crockford.EncodeToString(b)
		if seen[c[:4]] {
			continue // locators are unique within a set
		}
		seen[c[:4]] = true
		codes = append(codes, c)
		shown = append(shown, c[:4]+"-"+c[4:8]+"-"+c[8:12]+"-"+c[12:])
	}
	slots := make([]recoverySlot, len(codes))
	for i, c := range codes {
		h, err := s.hashPassword(ctx, c)
		if err != nil {
			return nil, err
		}
		slots[i] = recoverySlot{Locator: c[:4], Hash: h}
	}
	err := s.modifyUser(ctx, name, func(tx store.Tx, u *userRecord) ([]audit.Event, error) {
		u.Recovery = slots
		return []audit.Event{s.event(ctx, audit.EventUserChange, audit.OutcomeSuccess, "user:"+name, "recovery codes regenerated", "", map[string]string{"action": "recovery-codes", "count": fmt.Sprint(len(slots))})}, nil
	})
	if err != nil {
		return nil, err
	}
	return shown, nil
}

// ResetCodePrefix starts every admin-issued reset code.
const ResetCodePrefix = "hth_rs_"

// ResetCode issues a one-time code with which name sets a new password
// (POST /.hearth/v1/auth/reset) before it expires. The admin hands the code
// over but never chooses or learns the password (ASVS 5.0 V6.4.6); a new
// code replaces any earlier one.
func (s *Service) ResetCode(ctx context.Context, name string) (code string, expires time.Time, err error) {
	r, err := s.randomString(20) // 160 bits
	if err != nil {
		return "", time.Time{}, err
	}
	code = ResetCodePrefix + r
	sum := sha256.Sum256([]byte(code))
	expires = s.now().UTC().Add(s.set.resetLifetime)
	err = s.modifyUser(ctx, name, func(tx store.Tx, u *userRecord) ([]audit.Event, error) {
		u.Reset = &resetRecord{Hash: sum[:], Expires: expires}
		return []audit.Event{s.event(ctx, audit.EventUserChange, audit.OutcomeSuccess, "user:"+name, "reset code issued", "", map[string]string{
			"action": "reset", "code_id": tokenID(sum), "expires": expires.Format(time.RFC3339),
		})}, nil
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return code, expires, nil
}

// TOTP (RFC 6238): SHA-1, 6 digits, 30-second steps, a 160-bit seed (RFC
// 4226 §4), one step of clock skew either way, and each code accepted once:
// the last accepted step is stored and only later steps are accepted
// (RFC 6238 §5.2; ASVS 5.0 V6.5.1).
var totpOpts = hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

const totpPeriod = 30

// matchTOTP returns the step of code if it is valid at now and later than
// last.
func matchTOTP(secret, code string, now time.Time, last uint64) (uint64, bool) {
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" || secret == "" {
		return 0, false
	}
	cur := uint64(now.Unix()) / totpPeriod
	for _, step := range []uint64{cur - 1, cur, cur + 1} {
		if step <= last {
			continue
		}
		want, err := hotp.GenerateCodeCustom(secret, step, totpOpts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return step, true
		}
	}
	return 0, false
}

// EnrollTOTP starts TOTP enrolment for name: it returns the base32 secret
// and the otpauth:// URL (for a QR code), to be shown once. The factor is
// active only after ConfirmTOTP proves the authenticator has it.
func (s *Service) EnrollTOTP(ctx context.Context, name string) (secret, url string, err error) {
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "hearth", AccountName: name, SecretSize: 20, Rand: s.rand})
	if err != nil {
		return "", "", fmt.Errorf("auth: generating TOTP secret: %w", err)
	}
	err = s.modifyUser(ctx, name, func(tx store.Tx, u *userRecord) ([]audit.Event, error) {
		u.TOTPPending = key.Secret()
		return []audit.Event{s.event(ctx, audit.EventUserChange, audit.OutcomeSuccess, "user:"+name, "TOTP enrolment started", "", map[string]string{"action": "totp-enroll"})}, nil
	})
	if err != nil {
		return "", "", err
	}
	return key.Secret(), key.URL(), nil
}

// ConfirmTOTP activates the pending TOTP secret of name when code is
// valid for it.
func (s *Service) ConfirmTOTP(ctx context.Context, name, code string) error {
	return s.modifyUser(ctx, name, func(tx store.Tx, u *userRecord) ([]audit.Event, error) {
		step, ok := matchTOTP(u.TOTPPending, code, s.now(), 0)
		if !ok {
			return nil, ErrBadCode
		}
		u.TOTPSecret, u.TOTPPending, u.TOTPLastStep = u.TOTPPending, "", step
		return []audit.Event{s.event(ctx, audit.EventUserChange, audit.OutcomeSuccess, "user:"+name, "TOTP enrolled", "", map[string]string{"action": "totp-confirm"})}, nil
	})
}

// RemoveTOTP removes name's second factor (enrolled or pending), for a
// person who lost their authenticator; they enrol again with EnrollTOTP.
// Recovery codes deliberately do not remove it: they replace a lost
// password, not a lost second factor.
func (s *Service) RemoveTOTP(ctx context.Context, name string) error {
	return s.modifyUser(ctx, name, func(tx store.Tx, u *userRecord) ([]audit.Event, error) {
		had := u.TOTPSecret != ""
		u.TOTPSecret, u.TOTPPending, u.TOTPLastStep = "", "", 0
		return []audit.Event{s.event(ctx, audit.EventUserChange, audit.OutcomeSuccess, "user:"+name, "TOTP removed", "", map[string]string{"action": "totp-remove", "was_enrolled": fmt.Sprint(had)})}, nil
	})
}

func identityKey(issuer, subject string) []byte {
	return []byte(issuer + "\x00" + subject)
}

// ErrIdentityLinked is returned by LinkIdentity when (issuer, subject) is
// linked to another user.
var ErrIdentityLinked = errors.New("auth: identity is already linked to another user")

// LinkIdentity links an OIDC identity (issuer, subject) to user name, so
// that UserForIdentity finds it after a login with that provider. It is
// idempotent for the same user; an identity linked to another user gives
// ErrIdentityLinked, a missing user ErrNoUser.
func (s *Service) LinkIdentity(ctx context.Context, username, issuer, subject string) error {
	if issuer == "" || subject == "" || strings.ContainsRune(issuer, 0) || strings.ContainsRune(subject, 0) {
		return fmt.Errorf("auth: an identity needs a non-empty issuer and subject")
	}
	return s.modifyUser(ctx, username, func(tx store.Tx, u *userRecord) ([]audit.Event, error) {
		if cur := tx.Bucket(bucketIdentities).Get(identityKey(issuer, subject)); cur != nil {
			if string(cur) == username {
				return nil, nil // already linked: idempotent, nothing to record
			}
			return nil, ErrIdentityLinked
		}
		if err := tx.Bucket(bucketIdentities).Put(identityKey(issuer, subject), []byte(username)); err != nil {
			return nil, err
		}
		return []audit.Event{s.event(ctx, audit.EventUserChange, audit.OutcomeSuccess, "user:"+username, "OIDC identity linked", "", map[string]string{
			"action": "link-identity", "issuer": issuer, "subject": subject,
		})}, nil
	})
}

// UserForIdentity returns the user linked to (issuer, subject), or
// ErrNoUser.
func (s *Service) UserForIdentity(ctx context.Context, issuer, subject string) (string, error) {
	var name string
	err := s.view(ctx, func(tx store.Tx) error {
		v := tx.Bucket(bucketIdentities).Get(identityKey(issuer, subject))
		if v == nil {
			return ErrNoUser
		}
		name = string(v)
		return nil
	})
	return name, err
}
