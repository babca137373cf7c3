package config

import (
	"fmt"
	"strings"
	"testing"
)

func renderedDefault(t testing.TB) string {
	t.Helper()
	b, err := Render(Defaults{Name: "Home", Listen: ":8443", CAListen: ":9443", Upstream: "http://127.0.0.1:18789", TrustDomain: "hearth.home.arpa", TrustedNetworks: []string{"127.0.0.0/8", "192.168.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lineOf returns the 1-based line of the first line containing s.
func lineOf(t *testing.T, text, s string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%q not in the file", s)
	return 0
}

func TestCheckDefaultIsClean(t *testing.T) {
	if ps := Check([]byte(renderedDefault(t))); len(ps) != 0 {
		t.Errorf("Check(the file init writes) = %v, want no problems", ps)
	}
}

// Every problem is reported, each on the line it is on, and one mistake
// does not hide another.
func TestCheckNamesEachLine(t *testing.T) {
	base := renderedDefault(t)
	for _, tc := range []struct {
		name   string
		edit   func(string) string
		marker []string // text on the lines the problems must name, in order
		want   []string // text each problem's message must contain
	}{
		{
			name: "misspelt keys",
			edit: func(s string) string {
				return strings.Replace(strings.Replace(s, "  upstream:", "  upstram:", 1), "  trust_domain:", "  trustdomain:", 1)
			},
			marker: []string{"upstram:", "trustdomain:"},
			want:   []string{"upstram", "trustdomain"},
		},
		{
			name: "a route with an unknown capability and a bad network",
			edit: func(s string) string {
				s = strings.Replace(s, `capability: "agent:write"`, `capability: "agent:writ"`, 1)
				return strings.Replace(s, `- "192.168.0.0/16"`, `- "192.168.0.0/33"`, 1)
			},
			marker: []string{`"192.168.0.0/33"`, `"agent:writ"`},
			want:   []string{"192.168.0.0/33", "agent:writ"},
		},
		{
			name: "a bundle naming an unknown capability",
			edit: func(s string) string {
				return strings.Replace(s, `["status", "conversations:read"]`, `["status", "conversation:read"]`, 1)
			},
			marker: []string{`"conversation:read"`},
			want:   []string{"conversation:read"},
		},
		{
			name: "a bad trust domain",
			edit: func(s string) string {
				return strings.Replace(s, `trust_domain: "hearth.home.arpa"`, `trust_domain: "Hearth Home"`, 1)
			},
			marker: []string{`trust_domain: "Hearth Home"`},
			want:   []string{"trust_domain"},
		},
		{
			name:   "a YAML syntax error",
			edit:   func(s string) string { return strings.Replace(s, "  token_idle: \"30m\"", "  token_idle: [\"30m\"", 1) },
			marker: []string{"token_idle:"},
			want:   []string{""},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := tc.edit(base)
			if text == base {
				t.Fatal("the edit changed nothing")
			}
			ps := Check([]byte(text))
			if len(ps) != len(tc.marker) {
				t.Fatalf("Check = %v, want %d problems", ps, len(tc.marker))
			}
			for i, p := range ps {
				line := lineOf(t, text, tc.marker[i])
				if tc.name == "a YAML syntax error" {
					// The parser names the line where it gave up, next
					// to the broken one.
					if p.Line < line-1 || p.Line > line+2 {
						t.Errorf("problem %d = %v, want a line from %d to %d", i, p, line-1, line+2)
					}
					continue
				}
				if p.Line != line || !strings.Contains(p.Msg, tc.want[i]) {
					t.Errorf("problem %d = %v, want line %d and a message naming %q", i, p, line, tc.want[i])
				}
				if !strings.HasPrefix(p.String(), fmt.Sprintf("%s:%d: ", FileName, line)) {
					t.Errorf("String() = %q, want it to start with %s:%d:", p.String(), FileName, line)
				}
			}
		})
	}
}

// Check accepts exactly what Parse and Validate accept, so that `hearth
// config check` never passes a file serve refuses (nor the reverse), and
// it never panics on any bytes.
func FuzzCheck(f *testing.F) {
	f.Add([]byte(renderedDefault(f)))
	f.Add([]byte("gateway:\n  routes:\n    - {path: \"/x\", methods: [GET], capability: \"status\"}\n"))
	f.Add([]byte("gateway: [1, 2"))
	f.Add([]byte("authz:\n  bundles:\n    \"a:b\": [\"a:b\"]\n"))
	f.Add([]byte("oidc:\n  - name: x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps := Check(b)
		c, err := Parse(b)
		if err == nil {
			err = c.Validate()
		}
		if (len(ps) == 0) != (err == nil) {
			t.Fatalf("Check = %v but Parse+Validate = %v", ps, err)
		}
	})
}
