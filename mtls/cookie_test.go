package mtls

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hearth-home/hearth/authz"
)

// The browser session cookie authenticates like a bearer token, is never
// forwarded to the agent, and does not authenticate an unsafe request that
// another site started.
func TestSessionCookie(t *testing.T) {
	alice := &authz.Principal{ID: "user:alice", Kind: authz.KindUser, Method: authz.MethodToken, AuthTime: time.Now(), MFA: true}
	h := newHarness(t, func(o *GatewayOptions) { o.Tokens = tokens{"good-token": alice} })
	alice.Caps = h.caps(t, "system:admin")
	c := h.client(t, nil, clientOpt{})
	tests := []struct {
		name, method, path, cookie, site string
		want                             int
	}{
		{"get with cookie", "GET", "/api/status", SessionCookie + "=good-token; theme=dark", "", 200},
		{"bad cookie", "GET", "/api/status", SessionCookie + "=nope", "", 401},
		{"same-origin put", "PUT", "/api/settings", SessionCookie + "=good-token", "same-origin", 200},
		{"cross-site put", "PUT", "/api/settings", SessionCookie + "=good-token", "cross-site", 401},
		{"same-site put", "PUT", "/api/settings", SessionCookie + "=good-token", "same-site", 401},
		{"other cookie only", "GET", "/api/status", "theme=dark", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := http.Header{"Cookie": {tt.cookie}}
			if tt.site != "" {
				hdr.Set("Sec-Fetch-Site", tt.site)
			}
			var body io.Reader
			if tt.method == "PUT" {
				body = strings.NewReader(`{"a":"b"}`)
			}
			r := do(t, c, tt.method, h.url+tt.path, body, hdr)
			if r.status != tt.want {
				t.Fatalf("%s %s with %q = %d %s, want %d", tt.method, tt.path, tt.cookie, r.status, r.body, tt.want)
			}
			if tt.want == 200 {
				up := h.up.lastReq().Header
				if strings.Contains(up.Get("Cookie"), SessionCookie) || up.Get(HeaderPrincipal) != "user:alice" {
					t.Errorf("upstream saw Cookie %q principal %q; want the session cookie removed and user:alice", up.Get("Cookie"), up.Get(HeaderPrincipal))
				}
				if tt.name == "get with cookie" && up.Get("Cookie") != "theme=dark" {
					t.Errorf("upstream Cookie = %q, want the agent's own cookie kept", up.Get("Cookie"))
				}
			}
		})
	}
}
