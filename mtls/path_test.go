package mtls

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"/", "/", nil},
		{"/api/status", "/api/status", nil},
		{"/api/status/", "/api/status/", nil},
		{"/api//status", "/api/status", nil},
		{"//api///status//", "/api/status/", nil},
		{"/api/./status", "/api/status", nil},
		{"/api/x/../status", "/api/status", nil},
		{"/api/x/..", "/api/", nil},
		{"/api/x/.", "/api/x/", nil},
		{"/..", "/", nil},
		{"/../../etc/passwd", "/etc/passwd", nil},
		{"/%2e%2e/%2E%2e/x", "/x", nil},
		{"/a/.%2e/b", "/b", nil},
		{"/%61%70%69", "/api", nil},
		{"/%7e%5f%2d%2e", "/~_-.", nil},
		{"/a%20b", "/a%20b", nil},
		{"/a%3bb", "/a%3Bb", nil},
		{"/a%3Fb", "/a%3Fb", nil},
		{"/%252e%252e", "", ErrBadPath},
		{"/%25%32%65", "", ErrBadPath},
		{"/a%25", "/a%25", nil},
		{"/100%25done", "/100%25done", nil},
		{"/%c0%ae%c0%ae/settings", "", ErrBadPath},
		{"/%C1%9C", "", ErrBadPath},
		{"/%F5", "", ErrBadPath},
		{"/caf%C3%A9", "/caf%C3%A9", nil},
		{"/.hidden/..x/...", "/.hidden/..x/...", nil},
		{"/caf\xc3\xa9", "/caf\xc3\xa9", nil},
		{"", "", ErrBadPath},
		{"api/status", "", ErrBadPath},
		{"*", "", ErrBadPath},
		{"http://host/x", "", ErrBadPath},
		{"/a%2fb", "", ErrBadPath},
		{"/a%2Fb", "", ErrBadPath},
		{"/a%5cb", "", ErrBadPath},
		{"/a\\b", "", ErrBadPath},
		{"/a%00", "", ErrBadPath},
		{"/a\x00", "", ErrBadPath},
		{"/a\x1fb", "", ErrBadPath},
		{"/a\x7fb", "", ErrBadPath},
		{"/a%", "", ErrBadPath},
		{"/a%4", "", ErrBadPath},
		{"/a%g1", "", ErrBadPath},
		{"/a;b", "", ErrBadPath},
		{"/a/..;/b", "", ErrBadPath},
		{"/a#b", "", ErrBadPath},
		{"/" + strings.Repeat("a", 9000), "", ErrBadPath},
	}
	for _, tt := range tests {
		got, err := NormalizePath(tt.in)
		if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("NormalizePath(%q) error = %v, want %v", tt.in, err, tt.err)
			continue
		}
		if got != tt.want {
			t.Errorf("NormalizePath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNormalizePathCleanDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _ = NormalizePath("/api/conversations/42/messages") }); n != 0 {
		t.Errorf("NormalizePath of a clean path allocates %v times, want 0", n)
	}
}

// FuzzNormalizePath checks the invariants the gateway relies on: the
// result is canonical (normalising it again changes nothing), absolute,
// free of dot segments, empty segments and encoded separators, and never
// contains an escape that decodes to an unreserved character.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/api/status", "/a/../b", "//a//b/", "/%2e%2E/x", "/a%2fb", "/%252e", "/a;b", "/a\\b", "/%7E", "/a/.", "/..", "/%41%42/%zz", "/\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := NormalizePath(in)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("error %v does not wrap ErrBadPath", err)
			}
			return
		}
		again, err := NormalizePath(out)
		if err != nil || again != out {
			t.Fatalf("NormalizePath(%q) = %q, which normalises to %q, %v", in, out, again, err)
		}
		if out == "" || out[0] != '/' || strings.Contains(out, "//") || strings.Contains(out, "\\") {
			t.Fatalf("NormalizePath(%q) = %q is not a clean absolute path", in, out)
		}
		for _, seg := range strings.Split(out, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("NormalizePath(%q) = %q keeps a dot segment", in, out)
			}
		}
		for i := 0; i+2 < len(out); i++ {
			if out[i] != '%' {
				continue
			}
			v := unhex(out[i+1])<<4 | unhex(out[i+2])
			if unreserved(v) || v == '/' || v == '\\' || v == 0 || out[i+1] >= 'a' || out[i+2] >= 'a' {
				t.Fatalf("NormalizePath(%q) = %q keeps escape %s", in, out, out[i:i+3])
			}
		}
	})
}

// FuzzTokenInQuery: whenever net/url would find a token or access_token
// parameter in a query (any case), the gateway refuses it.
func FuzzTokenInQuery(f *testing.F) {
	for _, s := range []string{"", "token=x", "a=1&access_token=y", "acc%65ss_token=z", "TOKEN", "q=token", "tokens=1", "%zz=1&token=2", "a+b=token"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		got := tokenInQuery(q)
		vals, _ := url.ParseQuery(q)
		for k := range vals {
			if strings.EqualFold(k, "token") || strings.EqualFold(k, "access_token") {
				if !got {
					t.Fatalf("tokenInQuery(%q) = false, but the query has %q", q, k)
				}
			}
		}
	})
}
