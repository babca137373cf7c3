package webui_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hearth-home/hearth/internal/webui"
	"github.com/hearth-home/hearth/mtls"
)

// With the audit log gone (closed: every Record fails, as on a full or
// failed disk), nothing that needs an entry proceeds: the home page, a
// login and a logout answer 503 (fail closed), and the page does not
// pretend the sign-out worked.
func TestAuditUnavailable(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.browser(t)
	if r := e.login(t, c, "alice", alicePw, ""); r.status != http.StatusSeeOther {
		t.Fatalf("login = %d %s", r.status, r.body)
	}
	tok := e.sessionCookie(c)
	if err := e.log.Close(); err != nil {
		t.Fatal(err)
	}
	r := e.do(t, c, "GET", webui.Prefix, nil, nil)
	if r.status != http.StatusServiceUnavailable || strings.Contains(r.body, "user:alice") {
		t.Errorf("home without an audit log = %d, want 503 without the page:\n%s", r.status, r.body)
	}
	other := e.browser(t)
	if r := e.login(t, other, "root", rootPw, e.totp(t, e.rootT)); r.status != http.StatusServiceUnavailable || e.sessionCookie(other) != "" {
		t.Errorf("login without an audit log = %d (cookie %v), want 503 and no cookie", r.status, e.sessionCookie(other) != "")
	}
	r = e.do(t, c, "POST", webui.LogoutPath, url.Values{}, e.sameOrigin())
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "could not end your session") {
		t.Errorf("logout without an audit log = %d, want 503 saying the session was not ended:\n%s", r.status, r.body)
	}
	if !strings.Contains(r.header.Get("Set-Cookie"), mtls.SessionCookie+"=;") {
		t.Errorf("the browser's cookie is not cleared: %q", r.header.Get("Set-Cookie"))
	}
	if tok == "" {
		t.Fatal("no token")
	}
}
