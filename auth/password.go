package auth

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Password rules (NIST SP 800-63B-4 §3.1.1.2; OWASP ASVS 5.0 V6.2).
const (
	// MinPasswordLen is the minimum length, in characters, of a password
	// that is the only factor (NIST SP 800-63B-4: 15).
	MinPasswordLen = 15
	// MinPasswordLenMFA is the minimum once a second factor is enrolled
	// (NIST SP 800-63B-4: 8).
	MinPasswordLenMFA = 8
	// MaxPasswordBytes bounds a password. NIST asks that at least 64
	// characters be allowed; 1024 bytes leaves room for any passphrase and
	// keeps argon2id's input small. A longer password is refused, never
	// truncated (ASVS 6.2.9).
	MaxPasswordBytes = 1024
)

// Rules a password can fail; PolicyError.Rule holds one of them.
const (
	RuleTooShort     = "too_short"
	RuleTooLong      = "too_long"
	RuleEncoding     = "encoding"
	RuleBlocklisted  = "blocklisted"
	RuleContextWords = "context_words"
)

// PolicyError says which password rule failed, in words a person can act on.
type PolicyError struct {
	Rule string // one of the Rule constants
	Msg  string
}

// Error implements error.
func (e *PolicyError) Error() string { return "auth: " + e.Msg }

// ErrPasswordPolicy is wrapped (via errors.Is on *PolicyError) by every
// password rule failure.
var ErrPasswordPolicy = errors.New("auth: password does not meet the policy")

// Is makes errors.Is(err, ErrPasswordPolicy) true for a *PolicyError.
func (e *PolicyError) Is(target error) bool { return target == ErrPasswordPolicy }

//go:embed blocklist.txt
var blocklistText string

// blocklist is the set of common passwords (lowercase); see gen_blocklist.go
// for where it comes from.
var blocklist = func() map[string]struct{} {
	m := make(map[string]struct{}, 4096)
	for _, l := range strings.Split(blocklistText, "\n") {
		if l == "" || strings.HasPrefix(l, "# ") {
			continue
		}
		m[l] = struct{}{}
	}
	return m
}()

// normalizePassword applies Unicode NFKC normalisation before hashing, so
// that the same passphrase typed on two keyboards matches (NIST SP
// 800-63B-4 §3.1.1.2). Invalid UTF-8 is refused rather than guessed at.
func normalizePassword(pw string) (string, error) {
	if len(pw) > MaxPasswordBytes {
		return "", &PolicyError{RuleTooLong, fmt.Sprintf("password is longer than %d bytes", MaxPasswordBytes)}
	}
	if !utf8.ValidString(pw) {
		return "", &PolicyError{RuleEncoding, "password is not valid UTF-8 text"}
	}
	n := norm.NFKC.String(pw)
	if len(n) > MaxPasswordBytes {
		return "", &PolicyError{RuleTooLong, fmt.Sprintf("password is longer than %d bytes", MaxPasswordBytes)}
	}
	return n, nil
}

// CheckPassword applies the password policy to a new password for user
// name. secondFactor says whether the account has a second factor
// enrolled (which lowers the minimum length from 15 to 8). There are no
// composition rules (NIST SP 800-63B-4, ASVS 6.2.5). The error is a
// *PolicyError naming the rule that failed.
func CheckPassword(pw, name string, secondFactor bool) error {
	n, err := normalizePassword(pw)
	if err != nil {
		return err
	}
	minLen := MinPasswordLen
	if secondFactor {
		minLen = MinPasswordLenMFA
	}
	if c := utf8.RuneCountInString(n); c < minLen {
		return &PolicyError{RuleTooShort, fmt.Sprintf("password has %d characters; it needs at least %d (a long passphrase of several words is easiest)", c, minLen)}
	}
	lower := strings.ToLower(n)
	if isCommon(lower) {
		return &PolicyError{RuleBlocklisted, "password is on the list of commonly used passwords; choose something less predictable"}
	}
	if contextual(lower, strings.ToLower(name)) {
		return &PolicyError{RuleContextWords, "password is built from the user name or the service name; choose something else"}
	}
	return nil
}

// isCommon reports whether lower is a blocklisted password, a blocklisted
// password with digits or punctuation added at its end, or a short unit or
// blocklisted word repeated ("passwordpassword", "abcabcabcabcabc").
func isCommon(lower string) bool {
	if _, ok := blocklist[lower]; ok {
		return true
	}
	if t := strings.TrimRight(lower, "0123456789!@#$%^&*()-_=+.,?~ "); t != lower && len(t) > 0 {
		if _, ok := blocklist[t]; ok {
			return true
		}
	}
	for unit := 1; unit <= len(lower)/2; unit++ {
		if len(lower)%unit != 0 {
			continue
		}
		u := lower[:unit]
		if strings.Repeat(u, len(lower)/unit) != lower {
			continue
		}
		if unit <= 4 {
			return true
		}
		if _, ok := blocklist[u]; ok {
			return true
		}
	}
	return false
}

// contextual reports whether the password is the user name or the service
// name, possibly repeated or followed by digits (NIST SP 800-63B-4 asks to
// refuse context-specific words).
func contextual(lower, name string) bool {
	t := strings.TrimRight(lower, "0123456789!@#$%^&*()-_=+.,?~ ")
	for _, w := range []string{name, "hearth"} {
		if w == "" {
			continue
		}
		if t == w || strings.Trim(strings.ReplaceAll(t, w, ""), "0123456789 ") == "" {
			return true
		}
	}
	return false
}
