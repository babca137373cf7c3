package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Entry is one line of a segment file: an Event and its index, which is
// also its leaf number in the Merkle tree. On disk it is the JSON object
//
//	{"index":N,"time":"…Z","event":"area.action","outcome":"…",…}
//
// with the fields in this order, written by encoding/json (map keys
// sorted), one per line. The leaf hash is tlog.RecordHash of the line's
// bytes without its terminating newline.
type Entry struct {
	Index int64 `json:"index"`
	Event
}

// Limits on an event's fields. They keep one entry well under a page and a
// batch bounded; an event over a limit is refused, not truncated, so that
// nothing is recorded that the caller did not say.
const (
	maxNameLen   = 64
	maxFieldLen  = 1024 // principal, resource, client, a meta value
	maxReasonLen = 4096
	maxMetaKeys  = 32
	// MaxEntrySize bounds one entry's line, newline included; Verify and
	// the readers refuse longer lines.
	MaxEntrySize = 64 << 10
)

// ErrInvalidEvent is wrapped by every error Record returns for an event it
// refuses to record (bad name, unknown outcome, a field over its limit, a
// meta key that looks like a secret). Nothing is written for such an event.
var ErrInvalidEvent = errors.New("audit: invalid event")

var knownOutcomes = map[string]bool{
	OutcomeSuccess: true, OutcomeFailure: true, OutcomeAllow: true, OutcomeDeny: true, OutcomeError: true,
}

// secretWords are the words that make a meta key look like it holds a
// secret. A key is split on '_' and refused if its last word (the one that
// says what the value is: refresh_token holds a token, token_id and
// password_set describe one) is one of these, unless its value is a
// SecretID ("hmac:" and 32 hex digits) or "true"/"false": the
// audit trail names secrets, it never holds them (OWASP ASVS v4.0.3 7.1.1
// and 7.1.2: no credentials or session tokens in logs; NIST SP 800-63B
// 5.1.1.2 for memorized secrets).
var secretWords = map[string]bool{
	"password": true, "passwd": true, "passphrase": true, "pass": true, "pin": true,
	"token": true, "secret": true, "code": true, "key": true, "otp": true, "totp": true, "hotp": true,
	"recovery": true, "credential": true, "credentials": true, "cookie": true,
	"authorization": true, "bearer": true, "private": true, "seed": true, "salt": true,
}

// ValidateEvent reports why e cannot be recorded, or nil. Names have the
// form area.action (lower case letters, digits and '_'); the outcome is
// one of the Outcome constants; meta keys are lower case words joined by
// '_'. As a guard against leaking secrets into the trail, a meta key whose
// last word is password, token, secret, code, key or the like
// (secretWords) is refused unless its value is a SecretID (see
// Log.SecretID) or a boolean. It is a guard, not a guarantee: it cannot see
// secrets under other keys or in free text (Reason, Resource), and callers
// must not put them there.
func ValidateEvent(e Event) error {
	if !validName(e.Name) {
		return fmt.Errorf("%w: event name %q is not of the form area.action", ErrInvalidEvent, e.Name)
	}
	if !knownOutcomes[e.Outcome] {
		return fmt.Errorf("%w: %s: unknown outcome %q", ErrInvalidEvent, e.Name, e.Outcome)
	}
	if !e.Time.IsZero() && (e.Time.Year() < 2000 || e.Time.Year() > 9999) {
		return fmt.Errorf("%w: %s: time %v out of range", ErrInvalidEvent, e.Name, e.Time)
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"principal", e.Principal, maxFieldLen},
		{"resource", e.Resource, maxFieldLen},
		{"client", e.Client, maxFieldLen},
		{"reason", e.Reason, maxReasonLen},
	} {
		if len(f.v) > f.max {
			return fmt.Errorf("%w: %s: %s is longer than %d bytes", ErrInvalidEvent, e.Name, f.name, f.max)
		}
	}
	if len(e.Meta) > maxMetaKeys {
		return fmt.Errorf("%w: %s: more than %d meta keys", ErrInvalidEvent, e.Name, maxMetaKeys)
	}
	for k, v := range e.Meta {
		if !validMetaKey(k) {
			return fmt.Errorf("%w: %s: meta key %q is not lower case words joined by '_'", ErrInvalidEvent, e.Name, k)
		}
		if len(v) > maxFieldLen {
			return fmt.Errorf("%w: %s: meta %s is longer than %d bytes", ErrInvalidEvent, e.Name, k, maxFieldLen)
		}
		if looksSecret(k) && !isSecretID(v) && v != "true" && v != "false" {
			return fmt.Errorf("%w: %s: meta key %q looks like it holds a secret; record Log.SecretID(secret) under it, never the secret", ErrInvalidEvent, e.Name, k)
		}
	}
	return nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	area, action, ok := strings.Cut(s, ".")
	return ok && validWord(area) && validWord(action)
}

func validMetaKey(s string) bool { return len(s) <= maxNameLen && validWord(s) }

// validWord: a lower case letter, then lower case letters, digits and '_'.
func validWord(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func looksSecret(key string) bool {
	// The last word names what the value is: "refresh_token" holds a
	// token, "token_id", "password_set" and "token_expires" describe one.
	return secretWords[key[strings.LastIndexByte(key, '_')+1:]]
}

// secretIDPrefix starts every SecretID.
const secretIDPrefix = "hmac:"

func isSecretID(v string) bool {
	if len(v) != len(secretIDPrefix)+32 || !strings.HasPrefix(v, secretIDPrefix) {
		return false
	}
	for _, c := range v[len(secretIDPrefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// marshalEvent encodes e (time already set, UTC) as the JSON object that
// follows the index in an entry line: `{"time":…}`.
// It is what json.Marshal writes (see appendEvent), without reflection.
func marshalEvent(e Event) ([]byte, error) {
	if y := e.Time.Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("%w: %s: time %v out of range", ErrInvalidEvent, e.Name, e.Time)
	}
	n := 160 + len(e.Name) + len(e.Outcome) + len(e.Principal) + len(e.Resource) + len(e.Reason) + len(e.Client)
	for k, v := range e.Meta {
		n += 6 + len(k) + len(v)
	}
	return appendEvent(make([]byte, 0, n), &e), nil
}

// appendEntryLine appends the line of entry index (without newline) built
// from an event encoded by marshalEvent. It equals json.Marshal(Entry{…}).
func appendEntryLine(dst []byte, index int64, event []byte) []byte {
	dst = append(dst, `{"index":`...)
	dst = strconv.AppendInt(dst, index, 10)
	dst = append(dst, ',')
	return append(dst, event[1:]...)
}

// indexPrefix reports whether line starts as entry index must.
func indexPrefix(line []byte, index int64) bool {
	var buf [32]byte
	p := append(buf[:0], `{"index":`...)
	p = strconv.AppendInt(p, index, 10)
	p = append(p, ',')
	return bytes.HasPrefix(line, p)
}

// ParseEntry parses one entry line (without its newline) strictly: it must
// be exactly the bytes hearth writes for the entry it decodes to (fields in
// order, no unknown or duplicate fields, UTC time, canonical JSON), and the
// event must pass ValidateEvent.
func ParseEntry(line []byte) (Entry, error) {
	var e Entry
	if len(line) >= MaxEntrySize {
		return e, fmt.Errorf("audit: entry longer than %d bytes", MaxEntrySize)
	}
	if bytes.IndexByte(line, '\n') >= 0 {
		return e, errors.New("audit: entry contains a newline")
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Entry{}, fmt.Errorf("audit: entry: %w", err)
	}
	// More misses a stray '}' or ']'; only EOF means nothing follows.
	if _, err := dec.Token(); err != io.EOF {
		return Entry{}, errors.New("audit: entry: data after the JSON object")
	}
	if e.Index < 0 {
		return Entry{}, fmt.Errorf("audit: entry: negative index %d", e.Index)
	}
	if e.Time.IsZero() || e.Time.Location() != time.UTC {
		return Entry{}, errors.New("audit: entry: time is missing or not UTC")
	}
	if err := ValidateEvent(e.Event); err != nil {
		return Entry{}, fmt.Errorf("audit: entry %d: %w", e.Index, err)
	}
	ev, err := marshalEvent(e.Event)
	if err != nil {
		return Entry{}, err
	}
	if !bytes.Equal(appendEntryLine(nil, e.Index, ev), line) {
		return Entry{}, fmt.Errorf("audit: entry %d is not in canonical form", e.Index)
	}
	return e, nil
}
