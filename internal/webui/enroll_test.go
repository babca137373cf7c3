package webui_test

import (
	"crypto/tls"
	"crypto/x509"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/webui"
)

var (
	linkRE     = regexp.MustCompile(`id="enroll-link" class="mono" href="([^"]+)"`)
	passwordRE = regexp.MustCompile(`id="p12-password"><span class="half">([a-z ]+)</span> <span class="half">([a-z ]+)</span>`)
	ticketRE   = regexp.MustCompile(`name="ticket" value="([^"]+)"`)
)

func match(t *testing.T, re *regexp.Regexp, body string) string {
	t.Helper()
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the page lacks %s:\n%s", re, body)
	}
	return html.UnescapeString(m[1])
}

// adminClient signs root in (password + TOTP).
func (e *env) adminClient(t *testing.T) *http.Client {
	t.Helper()
	c := e.browser(t)
	if r := e.login(t, c, "root", rootPw, e.totp(t, e.rootT)); r.status != http.StatusSeeOther {
		t.Fatalf("root login = %d %s", r.status, r.body)
	}
	return c
}

// addPhone adds a device on the Devices page and returns its link's path.
func (e *env) addPhone(t *testing.T, admin *http.Client, name string, caps ...string) string {
	t.Helper()
	r := e.do(t, admin, "POST", webui.DevicesPath, url.Values{"name": {name}, "caps": caps}, e.sameOrigin())
	if r.status != 200 || !strings.Contains(r.body, `<svg class="qr"`) {
		t.Fatalf("add device = %d, want 200 with a QR code:\n%s", r.status, r.body)
	}
	u, err := url.Parse(match(t, linkRE, r.body))
	if err != nil {
		t.Fatal(err)
	}
	return u.Path
}

// claim presses the page's button and returns the password and ticket.
func (e *env) claim(t *testing.T, phone *http.Client, link, platform string) (string, string) {
	t.Helper()
	r := e.do(t, phone, "POST", link, url.Values{"p": {platform}}, e.sameOrigin())
	if r.status != 200 {
		t.Fatalf("claim = %d:\n%s", r.status, r.body)
	}
	m := passwordRE.FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("the page lacks the password:\n%s", r.body)
	}
	return strings.ReplaceAll(m[1]+m[2], " ", ""), match(t, ticketRE, r.body)
}

func TestEnrollPhoneOverHTTP(t *testing.T) {
	e := newEnv(t, envOpts{})
	admin := e.adminClient(t)
	link := e.addPhone(t, admin, "alices-phone", "system:read")

	// Any number of GETs (a link previewer, the phone) consume nothing.
	preview := e.browser(t)
	for i := 0; i < 2; i++ {
		r := e.do(t, preview, "GET", link, nil, http.Header{"User-Agent": {"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/130.0 Mobile Safari/537.36"}})
		if r.status != 200 || !strings.Contains(r.body, `id="claim-button"`) || !strings.Contains(r.body, `data-platform="android"`) {
			t.Fatalf("GET link #%d = %d, want the Android page with its button:\n%s", i, r.status, r.body)
		}
		if !strings.Contains(r.header.Get("Content-Security-Policy"), "script-src 'self'") || strings.Contains(r.header.Get("Content-Security-Policy"), "unsafe-eval") {
			t.Errorf("enroll CSP = %q", r.header.Get("Content-Security-Policy"))
		}
	}
	phone := e.browser(t)
	// A post without the CSRF token is refused, and consumes nothing.
	if r := e.do(t, phone, "POST", link, url.Values{"csrf": {"forged"}}, e.sameOrigin()); r.status != http.StatusForbidden {
		t.Fatalf("claim with a forged CSRF token = %d, want 403", r.status)
	}
	if r := e.do(t, phone, "POST", link, url.Values{"p": {"android"}}, http.Header{"Origin": {"https://evil.example"}}); r.status != http.StatusForbidden {
		t.Fatalf("cross-origin claim = %d, want 403", r.status)
	}
	pw, tk := e.claim(t, phone, link, webui.PlatformAndroid)
	if len(pw) != webui.PasswordLen {
		t.Errorf("password %d letters, want %d", len(pw), webui.PasswordLen)
	}
	// Second use: refused.
	if r := e.do(t, e.browser(t), "POST", link, url.Values{}, e.sameOrigin()); r.status != http.StatusGone {
		t.Errorf("second claim = %d, want 410", r.status)
	}
	if r := e.do(t, preview, "GET", link, nil, nil); r.status != http.StatusGone {
		t.Errorf("GET after the claim = %d, want 410", r.status)
	}
	// The one download.
	r := e.do(t, phone, "POST", webui.EnrollFilePath, url.Values{"ticket": {tk}, "format": {webui.FormatP12}}, e.sameOrigin())
	if r.status != 200 || r.header.Get("Content-Type") != "application/x-pkcs12" || !strings.Contains(r.header.Get("Content-Disposition"), `filename="alices-phone.p12"`) {
		t.Fatalf("download = %d %q %q", r.status, r.header.Get("Content-Type"), r.header.Get("Content-Disposition"))
	}
	key, leaf, cas, err := pkcs12.DecodeChain([]byte(r.body), pw)
	if err != nil {
		t.Fatalf("the file does not open with the page's password: %v", err)
	}
	if r := e.do(t, phone, "POST", webui.EnrollFilePath, url.Values{"ticket": {tk}, "format": {webui.FormatP12}}, e.sameOrigin()); r.status != http.StatusGone {
		t.Errorf("second download = %d, want 410", r.status)
	}
	// The phone reaches the agent with it.
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	cfg := e.tls.Clone()
	cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{leaf.Raw, cas[0].Raw}, PrivateKey: key}}
	dev := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	t.Cleanup(dev.CloseIdleConnections)
	if r := e.do(t, dev, "GET", "/api/status", nil, nil); r.status != 200 || r.body != "agent says hello to device:alices-phone" {
		t.Fatalf("the phone's GET = %d %q", r.status, r.body)
	}
	// Revoke on the Devices page (confirmation first); the next request
	// is refused.
	if r := e.do(t, admin, "GET", webui.DevicesPath+"/alices-phone/revoke", nil, nil); r.status != 200 || !strings.Contains(r.body, `id="confirm-revoke"`) {
		t.Fatalf("revoke confirmation = %d:\n%s", r.status, r.body)
	}
	if r := e.do(t, admin, "POST", webui.DevicesPath+"/alices-phone/revoke", url.Values{}, e.sameOrigin()); r.status != http.StatusSeeOther {
		t.Fatalf("revoke = %d %s", r.status, r.body)
	}
	if r := e.do(t, dev, "GET", "/api/status", nil, nil); r.status != http.StatusUnauthorized {
		t.Errorf("the revoked phone's GET = %d, want 401", r.status)
	}
	// The audit page has the story.
	a := e.do(t, admin, "GET", webui.AuditPath+"?principal="+url.QueryEscape("user:root"), nil, nil)
	for _, want := range []string{audit.EventDeviceAdd, audit.EventCertRevoke} {
		if !strings.Contains(a.body, `class="event">`+want+`<`) {
			t.Errorf("audit page (principal user:root) lacks %s", want)
		}
	}
	a = e.do(t, admin, "GET", webui.AuditPath+"?event=device.enroll", nil, nil)
	if strings.Count(a.body, `class="event">device.enroll<`) < 2 || strings.Contains(a.body, `class="event">device.add<`) {
		t.Errorf("the event filter shows other events or misses the claim and the issue:\n%s", a.body)
	}
	secret := link[strings.LastIndex(link, "/")+1:]
	es, _ := e.log.Tail(1000, nil)
	for _, en := range es {
		for _, v := range append([]string{en.Reason, en.Resource}, mapValues(en.Meta)...) {
			if strings.Contains(v, secret) || strings.Contains(v, pw) {
				t.Errorf("audit entry %d (%s) carries the link secret or the password", en.Index, en.Name)
			}
		}
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestEnrollLinkExpires(t *testing.T) {
	e := newEnv(t, envOpts{})
	admin := e.adminClient(t)
	link := e.addPhone(t, admin, "tablet", "system:read")
	e.clk.Add(10*time.Minute + time.Second)
	phone := e.browser(t)
	if r := e.do(t, phone, "GET", link, nil, nil); r.status != http.StatusGone || !strings.Contains(r.body, "already used, has expired") {
		t.Errorf("GET an expired link = %d:\n%s", r.status, r.body)
	}
	if r := e.do(t, phone, "POST", link, url.Values{}, e.sameOrigin()); r.status != http.StatusGone {
		t.Errorf("claim an expired link = %d, want 410", r.status)
	}
	// A ticket outlives nothing either: claim a fresh link, let it expire,
	// then download.
	link = e.addPhone(t, admin, "tablet2", "system:read")
	_, tk := e.claim(t, phone, link, webui.PlatformIOS)
	e.clk.Add(10*time.Minute + time.Second)
	if r := e.do(t, phone, "POST", webui.EnrollFilePath, url.Values{"ticket": {tk}, "format": {webui.FormatApple}}, e.sameOrigin()); r.status != http.StatusGone {
		t.Errorf("download after expiry = %d, want 410", r.status)
	}
}

func TestEnrollAppleProfile(t *testing.T) {
	e := newEnv(t, envOpts{})
	admin := e.adminClient(t)
	link := e.addPhone(t, admin, "ipad", "system:read")
	phone := e.browser(t)
	ipad := "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15"
	r := e.do(t, phone, "GET", link, nil, http.Header{"User-Agent": {ipad}})
	// The server sees a Mac; the page's script checks touch points.
	if !strings.Contains(r.body, `data-platform="mac" data-detected="true"`) || !strings.Contains(r.body, `<script src="/.hearth/ui/static/platform.js">`) {
		t.Fatalf("the page does not let its script correct an iPad seen as a Mac:\n%s", r.body)
	}
	if s := e.do(t, phone, "GET", "/.hearth/ui/static/platform.js", nil, nil); s.status != 200 || !strings.Contains(s.body, "maxTouchPoints") {
		t.Fatalf("platform.js = %d", s.status)
	}
	r = e.do(t, phone, "GET", link+"?p=ios", nil, nil)
	if !strings.Contains(r.body, `id="help-ios"`) || !strings.Contains(r.body, "only Safari") {
		t.Errorf("the iOS page lacks its instructions")
	}
	_, tk := e.claim(t, phone, link, webui.PlatformIOS)
	r = e.do(t, phone, "POST", webui.EnrollFilePath, url.Values{"ticket": {tk}, "format": {webui.FormatApple}}, e.sameOrigin())
	if r.status != 200 || r.header.Get("Content-Type") != "application/x-apple-aspen-config" || !strings.Contains(r.body, "com.apple.security.pkcs12") {
		t.Fatalf("profile download = %d %q", r.status, r.header.Get("Content-Type"))
	}
}

func TestUsersAndAccountPages(t *testing.T) {
	e := newEnv(t, envOpts{})
	admin := e.adminClient(t)
	r := e.do(t, admin, "POST", webui.UsersPath, url.Values{"name": {"gran"}, "caps": {"system:read"}}, e.sameOrigin())
	if r.status != 200 || !strings.Contains(r.body, `id="setup-code"`) {
		t.Fatalf("add user = %d:\n%s", r.status, r.body)
	}
	code := match(t, regexp.MustCompile(`id="code">([^<]+)<`), r.body)
	// Gran sets her own password with the code.
	g := e.browser(t)
	const granPw = "teapot-harbour-77-velvet"
	r = e.do(t, g, "POST", webui.ResetPath, url.Values{"username": {"gran"}, "code": {code}, "password": {granPw}, "password2": {granPw}}, e.sameOrigin())
	if r.status != http.StatusSeeOther {
		t.Fatalf("reset with the code = %d:\n%s", r.status, r.body)
	}
	if r := e.login(t, g, "gran", granPw, ""); r.status != http.StatusSeeOther {
		t.Fatalf("gran's login = %d", r.status)
	}
	// A second session of hers (another browser), listed and ended from
	// the first.
	g2 := e.browser(t)
	if r := e.login(t, g2, "gran", granPw, ""); r.status != http.StatusSeeOther {
		t.Fatalf("gran's second login = %d", r.status)
	}
	r = e.do(t, g, "GET", webui.AccountPath, nil, nil)
	if strings.Count(r.body, "<tr><td data-label=\"Signed in\">") != 2 || strings.Count(r.body, `good">this one<`) != 1 {
		t.Fatalf("account page does not list two sessions, one of them this one:\n%s", r.body)
	}
	fam := match(t, regexp.MustCompile(`name="family" value="([^"]+)"`), r.body)
	if r := e.do(t, g, "POST", webui.AccountPath+"/end-session", url.Values{"family": {fam}}, e.sameOrigin()); r.status != 200 {
		t.Fatalf("end session = %d:\n%s", r.status, r.body)
	}
	if r := e.do(t, g2, "GET", webui.Prefix, nil, nil); r.status != http.StatusSeeOther {
		t.Errorf("the ended session still opens the home page (%d)", r.status)
	}
	if r := e.do(t, g, "GET", webui.Prefix, nil, nil); r.status != 200 {
		t.Errorf("ending the other session ended this one too (%d)", r.status)
	}
	// A family that is not hers: refused.
	if r := e.do(t, g, "POST", webui.AccountPath+"/end-session", url.Values{"family": {"0000"}}, e.sameOrigin()); r.status != http.StatusUnauthorized {
		t.Errorf("ending an unknown session = %d, want 401", r.status)
	}
	// Her account page: TOTP enrolment with a QR code.
	r = e.do(t, g, "POST", webui.AccountPath+"/totp", url.Values{}, e.sameOrigin())
	if r.status != 200 || !strings.Contains(r.body, `<svg class="qr"`) {
		t.Fatalf("TOTP start = %d:\n%s", r.status, r.body)
	}
	secret := match(t, regexp.MustCompile(`id="totp-secret">([A-Z2-7]+)<`), r.body)
	r = e.do(t, g, "POST", webui.AccountPath+"/totp-confirm", url.Values{"code": {e.totp(t, secret)}}, e.sameOrigin())
	if r.status != 200 || !strings.Contains(r.body, "one-time code is set up") {
		t.Fatalf("TOTP confirm = %d:\n%s", r.status, r.body)
	}
	// Fresh sign-in needed for recovery codes.
	e.clk.Add(webui.FreshLogin + time.Minute)
	if r := e.do(t, g, "POST", webui.AccountPath+"/recovery-codes", url.Values{}, e.sameOrigin()); r.status != http.StatusForbidden {
		t.Errorf("recovery codes on a stale session = %d, want 403", r.status)
	}
	// Admin: disable, then the users list says so.
	r = e.do(t, admin, "POST", webui.UsersPath+"/gran/disable", url.Values{}, e.sameOrigin())
	if r.status != 200 || !strings.Contains(r.body, `<span class="tag bad">disabled</span>`) {
		t.Errorf("disable = %d:\n%s", r.status, r.body)
	}
	// An admin action without its CSRF token is refused.
	if r := e.do(t, admin, "POST", webui.UsersPath+"/gran/enable", url.Values{"csrf": {""}}, e.sameOrigin()); r.status != http.StatusForbidden {
		t.Errorf("enable without the CSRF token = %d, want 403", r.status)
	}
}

func TestThrottledInWords(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.browser(t)
	var r resp
	for i := 0; i < 8; i++ {
		r = e.login(t, c, "alice", "wrong-wrong-wrong-wrong", "")
		if r.status == http.StatusTooManyRequests {
			break
		}
	}
	if r.status != http.StatusTooManyRequests || !regexp.MustCompile(`Try again in \d+ (minute|minutes|seconds)\.`).MatchString(r.body) {
		t.Fatalf("throttled login = %d, want 429 saying when in words:\n%s", r.status, r.body)
	}
}
