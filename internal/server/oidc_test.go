package server

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hearth-home/hearth/authz"
)

// Only a fresh, second-factor user session (or the local socket) may link
// an OIDC identity from the web page.
func TestSignedInUserForLinking(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tok := func(mfa bool, age time.Duration) *authz.Principal {
		return &authz.Principal{ID: "user:alice", Kind: authz.KindUser, Method: authz.MethodToken, Zone: authz.ZoneRemote, MFA: mfa, AuthTime: now.Add(-age)}
	}
	cases := []struct {
		name string
		p    *authz.Principal
		want bool
	}{
		{"fresh token with a second factor", tok(true, time.Minute), true},
		{"password-only token", tok(false, time.Minute), false},
		{"token with a second factor, too old", tok(true, LinkMaxAge+time.Second), false},
		{"token dated in the future", tok(true, -2*time.Minute), false},
		{"token without an auth time", &authz.Principal{ID: "user:alice", Kind: authz.KindUser, Method: authz.MethodToken, MFA: true}, false},
		{"local socket", &authz.Principal{ID: "user:local", Kind: authz.KindUser, Method: authz.MethodLocal, Zone: authz.ZoneLAN}, true},
		{"device", &authz.Principal{ID: "device:pi", Kind: authz.KindDevice, Method: authz.MethodDevice, AuthTime: now}, false},
		{"nobody", nil, false},
	}
	f := signedInUser(func() time.Time { return now })
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/.hearth/v1/auth/oidc/test/link", nil)
			if c.p != nil {
				r = r.WithContext(authz.WithPrincipal(r.Context(), c.p))
			}
			if _, ok := f(r); ok != c.want {
				t.Errorf("signedInUser(%+v) ok = %v, want %v", c.p, ok, c.want)
			}
		})
	}
}
