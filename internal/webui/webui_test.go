package webui_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/ca"
	"github.com/hearth-home/hearth/internal/webui"
	"github.com/hearth-home/hearth/mtls"
)

const csp = "default-src 'none'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"

func checkPageHeaders(t *testing.T, r resp) {
	t.Helper()
	for k, want := range map[string]string{
		"Content-Security-Policy": csp,
		"X-Frame-Options":         "DENY",
		"Cache-Control":           "no-store",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "same-origin", // not no-referrer: that makes browsers send Origin: null
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

// The login page is a plain form posting to itself, with a link per OIDC
// provider; the home page without a principal sends you there.
func TestLoginPage(t *testing.T) {
	e := newEnv(t, envOpts{providers: []webui.OIDCProvider{{Name: "google", DisplayName: "Google <Workspace>"}, {Name: "kc"}}})
	c := e.browser(t)
	r := e.do(t, c, "GET", webui.LoginPath, nil, nil)
	if r.status != 200 {
		t.Fatalf("GET login = %d %s", r.status, r.body)
	}
	checkPageHeaders(t, r)
	for _, want := range []string{
		`<form class="login" method="post" action="/.hearth/ui/login">`,
		`name="username"`, `name="password" type="password" autocomplete="current-password"`, `name="totp"`,
		`href="/.hearth/v1/auth/oidc/google/login?return=%2F.hearth%2Fui%2F">Sign in with Google &lt;Workspace&gt;</a>`,
		`href="/.hearth/v1/auth/oidc/kc/login?return=%2F.hearth%2Fui%2F">Sign in with kc</a>`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("login page lacks %q:\n%s", want, r.body)
		}
	}
	if strings.Contains(r.body, "<script") {
		t.Errorf("login page has a script")
	}
	r = e.do(t, c, "GET", webui.Prefix, nil, nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != webui.LoginPath {
		t.Fatalf("GET / without a principal = %d Location %q, want 303 to the login page", r.status, r.header.Get("Location"))
	}
	checkPageHeaders(t, r)
	r = e.do(t, c, "GET", webui.Prefix+"nope", nil, nil)
	if r.status != 404 {
		t.Errorf("GET unknown page = %d, want 404", r.status)
	}
}

// A form post must come from hearth's own origin (login CSRF, forced
// logout).
func TestSameOrigin(t *testing.T) {
	e := newEnv(t, envOpts{})
	good := url.Values{"username": {"alice"}, "password": {alicePw}}
	tests := []struct {
		name string
		hdr  http.Header
		want int
	}{
		{"other origin", http.Header{"Origin": {"https://evil.example"}}, 403},
		{"other port", http.Header{"Origin": {strings.Replace(e.url, "127.0.0.1:", "127.0.0.1:1", 1)}}, 403},
		{"http scheme", http.Header{"Origin": {strings.Replace(e.url, "https:", "http:", 1)}}, 403},
		{"null origin", http.Header{"Origin": {"null"}}, 403},
		{"two origins", http.Header{"Origin": {e.url, "https://evil.example"}}, 403},
		{"cross-site fetch", http.Header{"Sec-Fetch-Site": {"cross-site"}}, 403},
		{"same-site fetch", http.Header{"Sec-Fetch-Site": {"same-site"}}, 403},
		{"no origin, no fetch metadata", http.Header{}, 403},
		{"other origin despite same-origin fetch", http.Header{"Origin": {"https://evil.example"}, "Sec-Fetch-Site": {"same-origin"}}, 403},
		{"same-origin fetch", http.Header{"Sec-Fetch-Site": {"same-origin"}}, 303},
		{"same origin", http.Header{"Origin": {e.url}}, 303},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.browser(t)
			r := e.do(t, c, "POST", webui.LoginPath, good, tt.hdr)
			if r.status != tt.want {
				t.Fatalf("POST login with %v = %d, want %d: %s", tt.hdr, r.status, tt.want, r.body)
			}
			if got := e.sessionCookie(c) != ""; got != (tt.want == 303) {
				t.Errorf("session cookie set = %v, want %v", got, tt.want == 303)
			}
			if tt.want != 303 {
				return
			}
			// A cross-origin logout does not end the session.
			r = e.do(t, c, "POST", webui.LogoutPath, url.Values{}, http.Header{"Origin": {"https://evil.example"}})
			if r.status != 403 {
				t.Fatalf("cross-origin logout = %d, want 403", r.status)
			}
			if r = e.do(t, c, "GET", webui.Prefix, nil, nil); r.status != 200 || !strings.Contains(r.body, "user:alice") {
				t.Fatalf("after a refused logout, home = %d, want 200 for user:alice", r.status)
			}
		})
	}
}

// A wrong password and an unknown user get the same 401 page.
func TestWrongPasswordGeneric(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.browser(t)
	wrong := e.login(t, c, "alice", "not-alices-password-at-all", "")
	unknown := e.login(t, c, "mallory", alicePw, "")
	noCode := e.login(t, c, "root", rootPw, "")
	for name, r := range map[string]resp{"wrong password": wrong, "unknown user": unknown, "missing code": noCode} {
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, r.status)
		}
		if !strings.Contains(r.body, "Wrong user name or password") {
			t.Errorf("%s: body lacks the generic message:\n%s", name, r.body)
		}
		checkPageHeaders(t, r)
	}
	if wrong.body != unknown.body || wrong.body != noCode.body {
		t.Errorf("the answers differ:\nwrong password:\n%s\nunknown user:\n%s\nmissing code:\n%s", wrong.body, unknown.body, noCode.body)
	}
	if strings.Contains(wrong.body, "not-alices-password") || strings.Contains(unknown.body, "mallory") {
		t.Errorf("the page echoes what was typed")
	}
	if e.sessionCookie(c) != "" {
		t.Errorf("a failed login set a session cookie")
	}
}

// Password spraying from one address is throttled: 429 with Retry-After.
func TestThrottled(t *testing.T) {
	e := newEnv(t, envOpts{authCfg: auth.Config{ClientBurst: 2, ClientRefill: "1m"}})
	c := e.browser(t)
	for i := 0; i < 2; i++ {
		if r := e.login(t, c, "alice", "wrong-wrong-wrong-wrong", ""); r.status != 401 {
			t.Fatalf("attempt %d = %d, want 401", i+1, r.status)
		}
	}
	r := e.login(t, c, "alice", alicePw, "")
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || r.header.Get("Retry-After") == "0" {
		t.Fatalf("third attempt = %d Retry-After %q, want 429 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
	if e.sessionCookie(c) != "" {
		t.Errorf("a throttled login set a session cookie")
	}
}

// Forms that are not url-encoded or too large are refused before the
// auth service sees them.
func TestBadForms(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.browser(t)
	big := url.Values{"username": {"alice"}, "password": {strings.Repeat("x", webui.MaxFormBytes)}}
	if r := e.do(t, c, "POST", webui.LoginPath, big, e.sameOrigin()); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized form = %d, want 413", r.status)
	}
	hdr := e.sameOrigin()
	hdr.Set("Content-Type", "application/json")
	req, _ := http.NewRequest("POST", e.url+webui.LoginPath, strings.NewReader(`{"username":"alice"}`))
	req.Header = hdr
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("JSON body = %d, want 415", res.StatusCode)
	}
	// The password is read from the body only, never from the URL.
	r := e.do(t, c, "POST", webui.LoginPath+"?username=alice&password="+url.QueryEscape(alicePw), url.Values{}, e.sameOrigin())
	if r.status != http.StatusUnauthorized {
		t.Errorf("credentials in the query = %d, want 401", r.status)
	}
}

// A good login sets the __Host- session cookie, the home page shows the
// principal (and, without hearth:admin, why there is no device list), and
// logout ends the session for good.
func TestLoginHomeLogout(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.browser(t)
	r := e.login(t, c, "Alice", alicePw, "")
	if r.status != http.StatusSeeOther || r.header.Get("Location") != webui.Prefix {
		t.Fatalf("login = %d Location %q, want 303 to %s: %s", r.status, r.header.Get("Location"), webui.Prefix, r.body)
	}
	sc := r.header.Values("Set-Cookie")
	if len(sc) != 1 {
		t.Fatalf("Set-Cookie = %q, want one", sc)
	}
	for _, want := range []string{mtls.SessionCookie + "=" + auth.AccessTokenPrefix, "Path=/", "Max-Age=3600", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(sc[0], want) {
			t.Errorf("Set-Cookie %q lacks %q", sc[0], want)
		}
	}
	if strings.Contains(strings.ToLower(sc[0]), "domain=") {
		t.Errorf("a __Host- cookie must have no Domain: %q", sc[0])
	}
	tok := e.sessionCookie(c)
	if tok == "" {
		t.Fatal("the jar has no session cookie")
	}

	r = e.do(t, c, "GET", webui.Prefix, nil, nil)
	if r.status != 200 {
		t.Fatalf("home = %d %s", r.status, r.body)
	}
	checkPageHeaders(t, r)
	for _, want := range []string{`<dd id="principal">user:alice</dd>`, `<dd id="method">token</dd>`, `<dd id="zone">lan</dd>`, "<code>status</code>", "<code>conversations:read</code>", `id="logout"`, "alice lacks hearth:admin"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("home lacks %q:\n%s", want, r.body)
		}
	}
	if strings.Contains(r.body, `id="devices"`) || strings.Contains(r.body, `id="audit"`) {
		t.Errorf("a user without hearth:admin sees the device list or the audit log")
	}

	r = e.do(t, c, "POST", webui.LogoutPath, url.Values{}, e.sameOrigin())
	if r.status != http.StatusSeeOther || r.header.Get("Location") != webui.LoginPath {
		t.Fatalf("logout = %d Location %q, want 303 to the login page", r.status, r.header.Get("Location"))
	}
	if sc := r.header.Get("Set-Cookie"); !strings.Contains(sc, mtls.SessionCookie+"=;") || !strings.Contains(sc, "Max-Age=0") {
		t.Errorf("logout Set-Cookie = %q, want the session cookie cleared", sc)
	}
	if e.sessionCookie(c) != "" {
		t.Errorf("the jar still has the session cookie")
	}
	if _, err := e.auth.AuthenticateToken(context.Background(), tok); err == nil {
		t.Fatal("the token still authenticates after logout")
	}
	// Replaying the old cookie: the gateway no longer finds a principal.
	fresh := e.browser(t)
	r = e.do(t, fresh, "GET", webui.Prefix, nil, http.Header{"Cookie": {mtls.SessionCookie + "=" + tok}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != webui.LoginPath {
		t.Fatalf("home with the logged-out token = %d, want 303 to the login page", r.status)
	}
	r = e.do(t, fresh, "GET", "/api/status", nil, http.Header{"Authorization": {"Bearer " + tok}})
	if r.status != http.StatusUnauthorized {
		t.Errorf("agent path with the logged-out token = %d, want 401", r.status)
	}
}

// An admin (password and TOTP) sees the devices and the latest audit
// entries, with hostile text escaped; the view's decision is audited.
func TestAdminView(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	if _, err := e.ca.AddDevice(ctx, "kitchen-pi", []string{"system:read"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.log.Record(ctx, audit.Event{Name: "test.note", Outcome: audit.OutcomeFailure, Principal: "user:<b>x</b>",
		Reason: `<script>alert("pwned")</script>`, Resource: `"><img src=x onerror=alert(1)>`}); err != nil {
		t.Fatal(err)
	}
	c := e.browser(t)
	if r := e.login(t, c, "root", rootPw, e.totp(t, e.rootT)); r.status != http.StatusSeeOther {
		t.Fatalf("root login = %d %s", r.status, r.body)
	}
	r := e.do(t, c, "GET", webui.Prefix, nil, nil)
	if r.status != 200 || !strings.Contains(r.body, `<dd id="principal">user:root</dd>`) || !strings.Contains(r.body, "(with a second factor)") || strings.Contains(r.body, `id="denied"`) {
		t.Fatalf("home = %d, want root with a second factor, not denied:\n%s", r.status, r.body)
	}
	dev := e.do(t, c, "GET", webui.DevicesPath, nil, nil)
	aud := e.do(t, c, "GET", webui.AuditPath, nil, nil)
	if dev.status != 200 || aud.status != 200 {
		t.Fatalf("devices = %d, audit = %d", dev.status, aud.status)
	}
	checkPageHeaders(t, dev)
	checkPageHeaders(t, aud)
	if !strings.Contains(dev.body, `id="devices"`) || !strings.Contains(dev.body, `<strong>kitchen-pi</strong>`) {
		t.Errorf("devices page lacks kitchen-pi:\n%s", dev.body)
	}
	for _, want := range []string{
		`id="audit"`, `&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;`, `&#34;&gt;&lt;img src=x onerror=alert(1)&gt;`, `user:&lt;b&gt;x&lt;/b&gt;`,
		"auth.login", `<span class="tag good">passes</span>`, `id="checkpoint"`,
	} {
		if !strings.Contains(aud.body, want) {
			t.Errorf("audit page lacks %q:\n%s", want, aud.body)
		}
	}
	for _, bad := range []string{"<script", "<img", "<b>x"} {
		if strings.Contains(aud.body, bad) {
			t.Errorf("audit page has unescaped %q", bad)
		}
	}
	es, err := e.log.Tail(5, func(en audit.Entry) bool {
		return en.Name == audit.EventAuthzDecision && en.Meta["via"] == "webui" && en.Principal == "user:root" && en.Meta["action"] == "audit.read"
	})
	if err != nil || len(es) == 0 || es[len(es)-1].Outcome != audit.OutcomeAllow {
		t.Fatalf("no allow decision of the audit page view in the audit log: %v %+v", err, es)
	}
	if tok := e.sessionCookie(c); strings.Contains(aud.body, tok) || strings.Contains(dev.body, tok) {
		t.Errorf("a page shows the session token")
	}
	// A password-only session is refused the admin pages, with the reason
	// and what to do.
	a := e.browser(t)
	e.login(t, a, "alice", alicePw, "")
	for _, pth := range []string{webui.DevicesPath, webui.UsersPath, webui.AuditPath} {
		if r := e.do(t, a, "GET", pth, nil, nil); r.status != http.StatusForbidden || !strings.Contains(r.body, "lacks hearth:admin") {
			t.Errorf("alice GET %s = %d, want 403 naming hearth:admin:\n%s", pth, r.status, r.body)
		}
	}
}

// A device name from the store is escaped too (the CA refuses such names;
// this stands for a store written by something else).
type hostileDevices struct{}

func (hostileDevices) ListDevices(context.Context) ([]ca.Device, error) {
	now := time.Now()
	return []ca.Device{{Name: `<script>alert(1)</script>`, Capabilities: nil, CreatedAt: now}}, nil
}

func TestDeviceNameEscaped(t *testing.T) {
	e := newEnv(t, envOpts{devices: hostileDevices{}})
	c := e.browser(t)
	if r := e.login(t, c, "root", rootPw, e.totp(t, e.rootT)); r.status != http.StatusSeeOther {
		t.Fatalf("root login = %d %s", r.status, r.body)
	}
	r := e.do(t, c, "GET", webui.DevicesPath, nil, nil)
	if !strings.Contains(r.body, `<strong>&lt;script&gt;alert(1)&lt;/script&gt;</strong>`) || strings.Contains(r.body, "<script") {
		t.Fatalf("device name not escaped:\n%s", r.body)
	}
}
