package server

import (
	"testing"

	"github.com/hearth-home/hearth/auth/oidc"
	"github.com/hearth-home/hearth/mtls"
)

// The gateway accepts the cookie that OIDC logins set.
func TestSessionCookieNamesAgree(t *testing.T) {
	if mtls.SessionCookie != oidc.SessionCookie {
		t.Errorf("mtls.SessionCookie = %q, oidc.SessionCookie = %q; they must be the same cookie", mtls.SessionCookie, oidc.SessionCookie)
	}
}
