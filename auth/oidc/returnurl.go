package oidc

import (
	"net/url"
	"strings"
)

// maxReturnLen bounds the return path carried through the login flow.
const maxReturnLen = 1024

// SafeReturn reports whether s is a same-origin path that a login may
// redirect the browser to afterwards, and returns it. It refuses anything a
// browser could resolve to another origin (OWASP ASVS 4.0 V5.1.5, the
// "unvalidated redirects" cheat sheet): absolute URLs, scheme-relative
// "//host", "/\host" (browsers treat '\' as '/'), their percent-encoded
// forms ("/%2F%2Fhost", "/%5Chost"), any backslash, control characters,
// whitespace and fragments. An empty s means "/".
func SafeReturn(s string) (string, bool) {
	if s == "" {
		return "/", true
	}
	if len(s) > maxReturnLen || s[0] != '/' {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c == 0x7f || c == '\\' || c == '#' || c >= 0x80 {
			return "", false
		}
	}
	if len(s) > 1 && (s[1] == '/' || s[1] == '\\') {
		return "", false
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || u.Fragment != "" {
		return "", false
	}
	// The decoded path must pass the same test, so that a server or proxy
	// that decodes before redirecting cannot be turned into an open
	// redirect, and must not hide a control character or backslash.
	p := u.Path
	if p == "" || p[0] != '/' || (len(p) > 1 && (p[1] == '/' || p[1] == '\\')) {
		return "", false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return "", false
		}
	}
	// An empty segment anywhere could become a leading "//" after
	// dot-segment removal ("/a/..//evil"), so it is refused too.
	if strings.Contains(p, "//") {
		return "", false
	}
	return s, true
}
