package mtls

import (
	"errors"
	"strings"
)

// ErrBadPath is wrapped by every error of [NormalizePath]; the gateway
// answers it with 400.
var ErrBadPath = errors.New("mtls: malformed request path")

// pathError says what is wrong with a path without echoing it (the path is
// attacker-controlled; it goes to the audit log, not into error strings).
type pathError string

func (e pathError) Error() string { return "mtls: malformed request path: " + string(e) }
func (e pathError) Unwrap() error { return ErrBadPath }

const (
	errNotAbsolute   = pathError("it does not start with /")
	errEncodedSlash  = pathError("an encoded slash or backslash (%2F, %5C) is not allowed")
	errBackslash     = pathError("a backslash is not allowed")
	errNUL           = pathError("a NUL byte is not allowed")
	errControl       = pathError("a control character is not allowed")
	errBadEscape     = pathError("an invalid percent escape")
	errSemicolon     = pathError("a ';' path parameter is not allowed")
	errFragment      = pathError("a fragment is not allowed")
	errPathTooLong   = pathError("it is longer than 8 KiB")
	errDoubleEncoded = pathError("a double-encoded escape (%25 followed by two hex digits) is not allowed")
	errNeverUTF8     = pathError("an escape of a byte that is never valid UTF-8 (%C0, %C1, %F5-%FF) is not allowed")
	maxPathLen       = 8 << 10
	upperhex         = "0123456789ABCDEF"
	pathParamRefusal = ';'
)

// NormalizePath returns the canonical form of raw, the escaped path of a
// request as it was sent (the request target without its query), or an
// error wrapping [ErrBadPath].
//
// Following RFC 3986 §6.2.2 (syntax-based normalisation) it
//   - decodes percent-encoded unreserved characters (ALPHA, DIGIT, "-", ".",
//     "_", "~"; §2.3), so "%2e%2E" is "..", and upper-cases the hex digits of
//     every other escape ("%3b" → "%3B", §6.2.2.1);
//   - removes "." and ".." segments (§5.2.4; ".." above the root stays at
//     the root);
//   - collapses repeated slashes.
//
// It refuses what different servers read differently, so that the route
// the gateway authorizes is the resource the agent serves (OWASP ASVS 5.0
// V1.2/V4 path canonicalisation): encoded slashes and backslashes
// (%2F, %5C), raw backslashes, NUL and other control characters, invalid
// escapes, and ";" (path parameters, which some servers strip, e.g. the
// "/..;/" bypass). Double encoding ("%252e", also spelt "%25%32%65") and
// bytes that are never valid UTF-8 (the overlong lead bytes %C0 and %C1,
// %F5-%FF) are refused too: an agent that decodes once more, or a lenient
// UTF-8 decoder, would otherwise read a different path from the one that
// was authorized.
//
// The result starts with "/" and keeps a trailing slash. When raw is
// already canonical NormalizePath returns it without allocating.
func NormalizePath(raw string) (string, error) {
	if len(raw) == 0 || raw[0] != '/' {
		return "", errNotAbsolute
	}
	if len(raw) > maxPathLen {
		return "", errPathTooLong
	}
	// Fast path: one scan to see whether anything needs rewriting.
	clean := true
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			if i+2 >= len(raw) || !ishex(raw[i+1]) || !ishex(raw[i+2]) {
				return "", errBadEscape
			}
			v := unhex(raw[i+1])<<4 | unhex(raw[i+2])
			if err := refuseDecoded(v); err != nil {
				return "", err
			}
			if v == '%' && i+4 < len(raw) && ishex(raw[i+3]) && ishex(raw[i+4]) {
				return "", errDoubleEncoded
			}
			if unreserved(v) || raw[i+1] >= 'a' || raw[i+2] >= 'a' {
				clean = false
			}
			i += 2
		case c == '\\':
			return "", errBackslash
		case c == 0:
			return "", errNUL
		case c < 0x20 || c == 0x7f:
			return "", errControl
		case c == pathParamRefusal:
			return "", errSemicolon
		case c == '#':
			return "", errFragment
		case c == '/':
			if i+1 < len(raw) && raw[i+1] == '/' {
				clean = false
			}
		case c == '.':
			if raw[i-1] == '/' && (i+1 == len(raw) || raw[i+1] == '/' ||
				raw[i+1] == '.' && (i+2 == len(raw) || raw[i+2] == '/')) {
				clean = false
			}
		}
	}
	if clean {
		return raw, nil
	}
	out := normalizeSlow(raw)
	// Decoding unreserved escapes can make a double encoding appear
	// ("%25%32%65" is "%252e").
	for i := 0; i+4 < len(out); i++ {
		if out[i] == '%' && out[i+1] == '2' && out[i+2] == '5' && ishex(out[i+3]) && ishex(out[i+4]) {
			return "", errDoubleEncoded
		}
	}
	return out, nil
}

// refuseDecoded refuses escapes that decode to separators or NUL.
func refuseDecoded(v byte) error {
	switch {
	case v == '/' || v == '\\':
		return errEncodedSlash
	case v == 0:
		return errNUL
	case v == 0xc0 || v == 0xc1 || v >= 0xf5:
		return errNeverUTF8
	}
	return nil
}

// normalizeSlow rewrites a path that NormalizePath has validated.
func normalizeSlow(raw string) string {
	// Decode unreserved escapes and upper-case the rest into segments.
	var segs []string
	var b strings.Builder
	b.Grow(len(raw))
	flush := func() {
		s := b.String()
		b.Reset()
		switch s {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, s)
		}
	}
	trailing := false
	for i := 1; i < len(raw); i++ {
		c := raw[i]
		switch c {
		case '/':
			flush()
			trailing = true
			continue
		case '%':
			v := unhex(raw[i+1])<<4 | unhex(raw[i+2])
			i += 2
			if unreserved(v) {
				b.WriteByte(v)
			} else {
				b.WriteByte('%')
				b.WriteByte(upperhex[v>>4])
				b.WriteByte(upperhex[v&15])
			}
		default:
			b.WriteByte(c)
		}
		trailing = false
	}
	last := b.String()
	flush()
	// "/a/." and "/a/.." end in a directory, as RFC 3986 §5.2.4 says.
	if last == "." || last == ".." {
		trailing = true
	}
	if len(segs) == 0 {
		return "/"
	}
	out := "/" + strings.Join(segs, "/")
	if trailing {
		out += "/"
	}
	return out
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
