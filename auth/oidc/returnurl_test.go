package oidc

import (
	"net/url"
	"strings"
	"testing"
)

func TestSafeReturn(t *testing.T) {
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"empty means root", "", "/", true},
		{"root", "/", "/", true},
		{"path", "/chat", "/chat", true},
		{"path and query", "/chat?room=1&x=%2F", "/chat?room=1&x=%2F", true},
		{"encoded slash inside", "/a%2Fb", "/a%2Fb", true},
		{"scheme-relative", "//evil.example", "", false},
		{"scheme-relative with path", "//evil.example/x", "", false},
		{"backslash host", `/\evil.example`, "", false},
		{"backslash anywhere", `/a\b`, "", false},
		{"encoded double slash", "/%2F%2Fevil.example", "", false},
		{"encoded slash then slash", "/%2f/evil.example", "", false},
		{"encoded backslash", "/%5Cevil.example", "", false},
		{"encoded backslash inside", "/a%5cb", "", false},
		{"absolute https", "https://evil.example/", "", false},
		{"absolute javascript", "javascript:alert(1)", "", false},
		{"relative", "chat", "", false},
		{"dot dot to double slash", "/a/..//evil.example", "", false},
		{"tab", "/\t/evil.example", "", false},
		{"newline", "/chat\nLocation: x", "", false},
		{"encoded newline", "/chat%0d%0aSet-Cookie:x", "", false},
		{"encoded nul", "/chat%00", "", false},
		{"space", "/a b", "", false},
		{"DEL", "/a\x7f", "", false},
		{"non-ASCII", "/caf\xc3\xa9", "", false},
		{"fragment", "/chat#x", "", false},
		{"user info trick", "/@evil.example", "/@evil.example", true},
		{"too long", "/" + strings.Repeat("a", maxReturnLen), "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := SafeReturn(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Errorf("SafeReturn(%q) = %q, %v, want %q, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// FuzzSafeReturn checks the invariant that matters: whatever SafeReturn
// accepts, a browser resolving it against hearth's origin stays on that
// origin, and it carries no control character or backslash.
func FuzzSafeReturn(f *testing.F) {
	for _, s := range []string{"", "/", "/chat?x=1", "//evil", `/\evil`, "/%2F%2Fevil", "https://evil/", "/a/..//b", "/%5c", "/\x00", "/a%0a"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://hearth.home.arpa:8443/.hearth/v1/auth/oidc/x/callback")
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := SafeReturn(s)
		if !ok {
			if got != "" {
				t.Fatalf("SafeReturn(%q) refused but returned %q", s, got)
			}
			return
		}
		if s != "" && got != s {
			t.Fatalf("SafeReturn(%q) = %q, want the input unchanged", s, got)
		}
		for _, c := range []byte(got) {
			if c < 0x21 || c >= 0x7f || c == '\\' {
				t.Fatalf("SafeReturn accepted %q with byte %#x", got, c)
			}
		}
		u, err := base.Parse(got)
		if err != nil {
			t.Fatalf("accepted %q does not parse: %v", got, err)
		}
		if u.Scheme != base.Scheme || u.Host != base.Host {
			t.Fatalf("accepted %q resolves to another origin: %s", got, u)
		}
		// The decoded path, as a server that decodes before redirecting
		// would emit it, must resolve to the same origin too.
		if strings.HasPrefix(u.Path, "//") || strings.Contains(u.Path, `\`) {
			t.Fatalf("accepted %q decodes to %q, which a browser may read as another host", got, u.Path)
		}
		if u2, err := base.Parse(u.Path); err == nil && u2.Host != base.Host {
			t.Fatalf("accepted %q decodes to %q, which leaves the origin", got, u.Path)
		}
	})
}
