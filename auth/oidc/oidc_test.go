package oidc

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/hearth-home/hearth/audit"
)

// TestMain silences zitadel's provider, which logs through slog.Default.
func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

// ---- test doubles for what auth and audit provide in the server ----

type identityKey struct{ issuer, subject string }

// memIdentities is the user store's identity links and emails.
type memIdentities struct {
	mu     sync.Mutex
	links  map[identityKey]string
	users  map[string]string // username → email
	failed bool              // store fault
}

func newIdentities() *memIdentities {
	return &memIdentities{links: map[identityKey]string{}, users: map[string]string{
		"alice": "alice@example.org", "bob": "bob@example.org", "carol-h": "",
	}}
}

func (m *memIdentities) UserForIdentity(_ context.Context, issuer, subject string) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failed {
		return "", false, errors.New("store down")
	}
	u, ok := m.links[identityKey{issuer, subject}]
	return u, ok, nil
}

func (m *memIdentities) LinkIdentity(_ context.Context, username, issuer, subject string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.users[username]; !ok {
		return fmt.Errorf("store: %w", ErrUnknownUser)
	}
	if cur, ok := m.links[identityKey{issuer, subject}]; ok && cur != username {
		return fmt.Errorf("store: %w", ErrIdentityLinked)
	}
	m.links[identityKey{issuer, subject}] = username
	return nil
}

func (m *memIdentities) setFailed(v bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failed = v
}

func (m *memIdentities) UserForEmail(_ context.Context, email string) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for u, e := range m.users {
		if e != "" && strings.EqualFold(e, email) {
			return u, true, nil
		}
	}
	return "", false, nil
}

func (m *memIdentities) linked(issuer, subject string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.links[identityKey{issuer, subject}]
}

type issued struct {
	user, method, client string
	mfa                  bool
}

type memSessions struct {
	mu    sync.Mutex
	calls []issued
}

func (m *memSessions) IssueSession(_ context.Context, username, method string, mfa bool, client string) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, issued{username, method, client, mfa})
	return Session{
		Token: fmt.Sprintf("hearth-token-%s-%d", username, len(m.calls)), RefreshToken: "refresh",
		ExpiresAt: time.Now().Add(time.Hour), Capabilities: []string{"status"},
	}, nil
}

func (m *memSessions) issued() []issued {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]issued(nil), m.calls...)
}

type memAudit struct {
	mu     sync.Mutex
	events []audit.Event
	fail   atomic.Bool
}

func (m *memAudit) Record(_ context.Context, e audit.Event) error {
	if m.fail.Load() {
		return errors.New("audit: disk full")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, e)
	return nil
}

func (m *memAudit) last(t *testing.T) audit.Event {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.events) == 0 {
		t.Fatal("no audit event recorded")
	}
	return m.events[len(m.events)-1]
}

func (m *memAudit) all() []audit.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]audit.Event(nil), m.events...)
}

type memThrottle struct {
	mu       sync.Mutex
	deny     bool
	failures []string
	success  []string
}

func (m *memThrottle) Allow(client, username string) (time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.deny {
		return 30 * time.Second, false
	}
	return 0, true
}
func (m *memThrottle) setDeny(v bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deny = v
}

func (m *memThrottle) failureCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.failures)
}

func (m *memThrottle) Failure(client, username string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failures = append(m.failures, username)
}
func (m *memThrottle) Success(client, username string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.success = append(m.success, username)
}

type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// ---- harness ----

type harness struct {
	op       *testOP
	hearth   *httptest.Server
	base     string // hearth's base URL
	h        *Handler
	ids      *memIdentities
	sessions *memSessions
	audit    *memAudit
	throttle *memThrottle
	clock    *clock
	tr       http.RoundTripper
	signedIn atomic.Pointer[string]
	logs     *bytes.Buffer
}

type harnessOpt func(*Provider)

// newHarness starts hearth's handler on TLS and a real provider "test"
// whose client redirects to it.
func newHarness(t testing.TB, opts ...harnessOpt) *harness {
	t.Helper()
	return newHarnessOpts(t, nil, opts...)
}

// newHarnessOpts is newHarness with editOpts applied to the Options.
func newHarnessOpts(t testing.TB, editOpts func(*Options), opts ...harnessOpt) *harness {
	t.Helper()
	return newHarnessNet(t, nil, editOpts, opts...)
}

// netNames makes the servers answer under names (hearth.test, idp.test)
// with a certificate from a test CA, so that a real browser sees two
// sites, as in a real deployment.
type netNames struct {
	hearthHost, idpHost string
	tls                 *tls.Config       // server side
	tr                  http.RoundTripper // Go clients: trusts the CA, resolves the names to 127.0.0.1
}

// hostURL is u with its host replaced by name (keeping the port).
func hostURL(u, name string) string {
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(u, "https://"))
	return "https://" + name + ":" + port
}

func newHarnessNet(t testing.TB, names *netNames, editOpts func(*Options), opts ...harnessOpt) *harness {
	t.Helper()
	hs := &harness{ids: newIdentities(), sessions: &memSessions{}, audit: &memAudit{}, throttle: &memThrottle{}, clock: &clock{}, logs: &bytes.Buffer{}}
	var handler atomic.Pointer[http.Handler]
	hs.hearth = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*handler.Load()).ServeHTTP(w, r)
	}))
	if names != nil {
		hs.hearth.TLS = names.tls.Clone()
	}
	hs.hearth.StartTLS()
	t.Cleanup(hs.hearth.Close)
	hs.base = hs.hearth.URL
	if names != nil {
		hs.base = hostURL(hs.hearth.URL, names.hearthHost)
	}
	hs.op = startOPNet(t, names, hs.base+PathPrefix+"test/callback")
	hs.tr = hs.op.srv.Client().Transport // trusts httptest's certificate, which both servers use
	if names != nil {
		hs.tr = names.tr
	}
	p := Provider{Name: "test", Issuer: hs.op.issuer, ClientID: testClientID, ClientSecret: testClientSecret,
		Scopes: []string{"email"}, DeviceFlow: true, DeviceClientID: testDeviceClientID}
	for _, o := range opts {
		o(&p)
	}
	o := Options{
		Sessions: hs.sessions, Identities: hs.ids, Emails: hs.ids, Throttle: hs.throttle, Audit: hs.audit,
		Logger: zerolog.New(hs.logs), Now: hs.clock.Now, HTTPClient: &http.Client{Transport: hs.tr, Timeout: 10 * time.Second},
		PublicURL: hs.base, DiscoveryRetry: time.Minute,
		SignedInUser: func(*http.Request) (string, bool) {
			if u := hs.signedIn.Load(); u != nil {
				return *u, true
			}
			return "", false
		},
	}
	if editOpts != nil {
		editOpts(&o)
	}
	h, err := New([]Provider{p}, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs.h = h
	mux := http.NewServeMux()
	mux.Handle(PathPrefix, h)
	mux.Handle(AdminPath, h.AdminHandler())
	// A page of "the agent" that shows whether the browser sent hearth's
	// session cookie, and whether scripts can read it.
	mux.HandleFunc("GET /test/whoami", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		v := "none"
		if c, err := r.Cookie(SessionCookie); err == nil {
			v = c.Value
		}
		fmt.Fprintf(w, "<!doctype html><p id=whoami>session=%s</p>", html.EscapeString(v))
	})
	var hh http.Handler = mux
	handler.Store(&hh)
	return hs
}

// browser is a scripted browser: a cookie jar and a client that follows
// redirects, except into hearth's callback when stopAtCallback is set.
type browser struct {
	t      testing.TB
	hs     *harness
	jar    *cookiejar.Jar
	client *http.Client
}

func (hs *harness) browser(t testing.TB) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: t, hs: hs, jar: jar}
	b.client = &http.Client{Transport: hs.tr, Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasSuffix(req.URL.Path, "/callback") && strings.HasPrefix(req.URL.String(), hs.base) {
				return http.ErrUseLastResponse
			}
			return nil
		}}
	return b
}

var formIDRE = regexp.MustCompile(`name="id" value="([^"]+)"`)

// start opens hearth's login (or link) URL and follows it to the
// provider's login form; it returns the provider's auth request ID.
func (b *browser) start(path, ret string) string {
	b.t.Helper()
	u := b.hs.base + PathPrefix + "test/" + path
	if ret != "" {
		u += "?return=" + url.QueryEscape(ret)
	}
	resp, body := b.get(u, "")
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("GET %s: got %d %s, want the provider's login form", u, resp.StatusCode, body)
	}
	m := formIDRE.FindStringSubmatch(body)
	if m == nil {
		b.t.Fatalf("provider login page has no auth request id: %s", body)
	}
	return m[1]
}

// signIn submits the provider's form and returns hearth's callback URL.
func (b *browser) signIn(id, user, pw string) string {
	b.t.Helper()
	resp, err := b.client.PostForm(b.hs.op.issuer+"/login", url.Values{"id": {id}, "username": {user}, "password": {pw}})
	if err != nil {
		b.t.Fatalf("provider login: %v", err)
	}
	defer resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.Contains(loc, "/callback?") {
		body, _ := io.ReadAll(resp.Body)
		b.t.Fatalf("provider login: got %d Location %q %s, want a redirect to hearth's callback", resp.StatusCode, loc, body)
	}
	return loc
}

func (b *browser) get(u, accept string) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// login runs the flow up to the callback URL.
func (b *browser) login(user, pw, ret string) string {
	b.t.Helper()
	return b.signIn(b.start("login", ret), user, pw)
}

func (b *browser) cookie(name string) *http.Cookie {
	u, _ := url.Parse(b.hs.base)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct{ Error, Code string }
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("body %q is not a JSON error: %v", body, err)
	}
	return e.Code
}

// ---- the full browser flow ----

func TestBrowserLogin(t *testing.T) {
	hs := newHarness(t)
	hs.ids.LinkIdentity(context.Background(), "alice", hs.op.issuer, "sub-alice")
	b := hs.browser(t)

	id := b.start("login", "/chat?room=1")
	// The authorization request hearth sent carries PKCE S256 and a nonce.
	hs.op.storage.mu.Lock()
	req := hs.op.storage.reqs[id]
	hs.op.storage.mu.Unlock()
	if req.challenge == nil || req.challenge.Method != "S256" || len(req.challenge.Challenge) != 43 || len(req.nonce) < 43 || len(req.state) < 43 {
		t.Fatalf("auth request = %+v, want an S256 challenge, a nonce and a state of 256 bits", req)
	}
	flow := b.cookie(flowCookie)
	if flow == nil {
		t.Fatalf("no %s cookie after login start", flowCookie)
	}
	cb := b.signIn(id, "alice", "alice-pw")
	resp, body := b.get(cb, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("callback: got %d %s, want 200", resp.StatusCode, body)
	}
	if !strings.Contains(body, `url=/chat?room=1`) {
		t.Errorf("callback page does not continue to the return path: %s", body)
	}
	if strings.Contains(resp.Request.URL.String(), "hearth-token") || strings.Contains(body, "hearth-token") {
		t.Errorf("the token appears in the URL or the page")
	}
	var sc *http.Cookie
	for _, c := range resp.Cookies() {
		switch c.Name {
		case SessionCookie:
			sc = c
		case flowCookie:
			if c.MaxAge >= 0 {
				t.Errorf("flow cookie not cleared: %+v", c)
			}
		}
	}
	if sc == nil || !sc.HttpOnly || !sc.Secure || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/" || sc.Domain != "" || sc.Value != "hearth-token-alice-1" {
		t.Fatalf("session cookie = %+v, want HttpOnly Secure SameSite=Strict Path=/ with the token", sc)
	}
	got := hs.sessions.issued()
	if len(got) != 1 || got[0].user != "alice" || got[0].method != "oidc" || got[0].mfa {
		t.Fatalf("IssueSession calls = %+v, want one for alice, method oidc, no MFA", got)
	}
	ev := hs.audit.last(t)
	if ev.Name != audit.EventAuthLogin || ev.Outcome != audit.OutcomeSuccess || ev.Principal != "user:alice" ||
		ev.Meta["method"] != "oidc" || ev.Meta["issuer"] != hs.op.issuer || ev.Meta["subject"] != "sub-alice" {
		t.Fatalf("audit = %+v, want auth.login success for user:alice, method oidc, issuer and subject", ev)
	}
	for _, e := range hs.audit.all() {
		j, _ := json.Marshal(e)
		if strings.Contains(string(j), "hearth-token") || strings.Contains(string(j), "code=") || strings.Contains(string(j), "eyJ") {
			t.Errorf("audit entry carries a secret: %s", j)
		}
	}
	if len(hs.throttle.success) != 1 || hs.throttle.success[0] != "alice" {
		t.Errorf("throttle successes = %v, want [alice]", hs.throttle.success)
	}
}

func TestBrowserLoginJSONAndMFA(t *testing.T) {
	hs := newHarness(t)
	hs.ids.LinkIdentity(context.Background(), "alice", hs.op.issuer, "sub-alice")
	hs.op.storage.mu.Lock()
	hs.op.storage.amr = []string{"pwd", "otp"}
	hs.op.storage.mu.Unlock()
	b := hs.browser(t)
	resp, body := b.get(b.login("alice", "alice-pw", ""), "application/json")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("callback: got %d %s", resp.StatusCode, body)
	}
	var s Session
	if err := json.Unmarshal([]byte(body), &s); err != nil || s.Token != "hearth-token-alice-1" || s.ExpiresAt.IsZero() {
		t.Fatalf("JSON answer = %s (%v), want the session", body, err)
	}
	if got := hs.sessions.issued(); len(got) != 1 || !got[0].mfa {
		t.Fatalf("IssueSession = %+v, want MFA from amr [pwd otp]", got)
	}
}

// ---- refusals in the browser flow ----

func TestCallbackRefusals(t *testing.T) {
	hs := newHarness(t)
	for _, u := range []string{"alice", "bob"} {
		hs.ids.LinkIdentity(context.Background(), u, hs.op.issuer, "sub-"+u)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(p *idTokenParts) string
		// tamper changes the callback URL or the browser before the call.
		tamper     func(t *testing.T, b *browser, cb string) string
		status     int
		code       string
		reason     string
		noExchange bool // hearth must refuse before contacting the provider
	}{
		{name: "wrong state", tamper: func(t *testing.T, b *browser, cb string) string {
			return replaceParam(t, cb, "state", "AAAA"+param(t, cb, "state")[4:])
		}, status: 400, code: "bad_state", reason: "state mismatch", noExchange: true},
		{name: "no state", tamper: func(t *testing.T, b *browser, cb string) string {
			return replaceParam(t, cb, "state", "")
		}, status: 400, code: "bad_state", reason: "state mismatch", noExchange: true},
		{name: "another browser (no cookie)", tamper: func(t *testing.T, b *browser, cb string) string {
			jar, _ := cookiejar.New(nil)
			b.client.Jar = jar
			return cb
		}, status: 400, code: "bad_state", reason: "no login state cookie", noExchange: true},
		{name: "forged cookie", tamper: func(t *testing.T, b *browser, cb string) string {
			c := b.cookie(flowCookie)
			v := []byte(c.Value)
			v[len(v)/2] ^= 1
			if v[len(v)/2] == '.' || v[len(v)/2] == '`' {
				v[len(v)/2] = 'A'
			}
			setCookie(b, flowCookie, string(v))
			return cb
		}, status: 400, code: "bad_state", reason: "login state cookie forged, expired or unreadable", noExchange: true},
		{name: "expired login state", tamper: func(t *testing.T, b *browser, cb string) string {
			b.hs.clock.Advance(flowLifetime + time.Second)
			t.Cleanup(func() { b.hs.clock.Advance(-flowLifetime - time.Second) })
			return cb
		}, status: 400, code: "bad_state", reason: "login state cookie forged, expired or unreadable", noExchange: true},
		{name: "provider error", tamper: func(t *testing.T, b *browser, cb string) string {
			u := replaceParam(t, cb, "code", "")
			return u + "&error=access_denied"
		}, status: 401, code: "provider_refused", reason: "provider returned error access_denied", noExchange: true},
		{name: "wrong nonce", mutate: func(p *idTokenParts) string {
			p.claims["nonce"] = "attacker-nonce"
			return p.sign()
		}, status: 401, code: "invalid_id_token", reason: "ID token nonce mismatch"},
		{name: "no nonce", mutate: func(p *idTokenParts) string {
			delete(p.claims, "nonce")
			return p.sign()
		}, status: 401, code: "invalid_id_token", reason: "ID token nonce mismatch"},
		{name: "wrong audience", mutate: func(p *idTokenParts) string {
			p.claims["aud"], p.claims["azp"] = []string{"another-app"}, "another-app"
			return p.sign()
		}, status: 401, code: "invalid_id_token", reason: `ID token refused: oidc: expected audience "hearth"`},
		{name: "several audiences, azp not hearth", mutate: func(p *idTokenParts) string {
			p.claims["aud"], p.claims["azp"] = []string{"hearth", "another-app"}, "another-app"
			return p.sign()
		}, status: 401, code: "invalid_id_token", reason: "ID token azp is not this client"},
		{name: "wrong issuer", mutate: func(p *idTokenParts) string {
			p.claims["iss"] = "https://evil.example"
			return p.sign()
		}, status: 401, code: "invalid_id_token", reason: "ID token refused: oidc: id token issued by a different provider"},
		{name: "expired ID token", mutate: func(p *idTokenParts) string {
			p.claims["exp"] = time.Now().Add(-time.Minute).Unix()
			p.claims["iat"] = time.Now().Add(-time.Hour).Unix()
			return p.sign()
		}, status: 401, code: "invalid_id_token", reason: "ID token refused: oidc: token is expired"},
		{name: "alg none", mutate: func(p *idTokenParts) string {
			return p.unsigned()
		}, status: 401, code: "invalid_id_token", reason: "ID token refused: oidc: malformed jwt"},
		{name: "HS256 signed with the public key", mutate: func(p *idTokenParts) string {
			return p.hs256WithPublicKey()
		}, status: 401, code: "invalid_id_token", reason: "ID token refused: oidc: malformed jwt"},
		{name: "signed by a key not in the JWKS", mutate: func(p *idTokenParts) string {
			p.key = other
			return p.sign()
		}, status: 401, code: "invalid_id_token", reason: "ID token refused: failed to verify signature"},
		{name: "no sub", mutate: func(p *idTokenParts) string {
			p.claims["sub"] = ""
			return p.sign()
		}, status: 401, code: "invalid_id_token", reason: "ID token has no valid sub"},
		{name: "unlinked identity", mutate: func(p *idTokenParts) string {
			p.claims["sub"] = "sub-nobody"
			return p.sign()
		}, status: 403, code: "unlinked_identity", reason: "identity not linked to any user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs.op.setMutation(tc.mutate)
			t.Cleanup(func() { hs.op.setMutation(nil) })
			b := hs.browser(t)
			cb := b.login("alice", "alice-pw", "")
			if tc.tamper != nil {
				cb = tc.tamper(t, b, cb)
			}
			before := hs.op.tokenCalls.Load()
			nIssued := len(hs.sessions.issued())
			resp, body := b.get(cb, "")
			if resp.StatusCode != tc.status || errorCode(t, body) != tc.code {
				t.Fatalf("callback: got %d %s, want %d %s", resp.StatusCode, body, tc.status, tc.code)
			}
			if got := len(hs.sessions.issued()); got != nIssued {
				t.Errorf("a session was issued")
			}
			if exchanged := hs.op.tokenCalls.Load() != before; exchanged == tc.noExchange {
				t.Errorf("code exchanged = %v, want %v", exchanged, !tc.noExchange)
			}
			ev := hs.audit.last(t)
			if ev.Name != audit.EventAuthLogin || ev.Outcome != audit.OutcomeFailure || !strings.HasPrefix(ev.Reason, tc.reason) || ev.Meta["method"] != "oidc" {
				t.Errorf("audit = %+v, want auth.login failure with reason %q", ev, tc.reason)
			}
		})
	}
}

func param(t *testing.T, raw, name string) string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get(name)
}

func replaceParam(t *testing.T, raw, name, value string) string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if value == "" {
		q.Del(name)
	} else {
		q.Set(name, value)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func setCookie(b *browser, name, value string) {
	u, _ := url.Parse(b.hs.base)
	b.jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/", Secure: true, HttpOnly: true}})
}
