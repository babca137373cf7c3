package webui_test

import (
	"context"
	"crypto/tls"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/ca"
	"github.com/hearth-home/hearth/internal/store/boltstore"
	"github.com/hearth-home/hearth/internal/webui"
	"github.com/hearth-home/hearth/mtls"
)

// clock is the injected clock of auth, the gateway and the pages.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Passwords of the test users (long enough for the single-factor rule).
const (
	alicePw = "violet-anchor-91-meadow"
	rootPw  = "copper-kettle-58-lantern"
)

// env is hearth's real stack in front of the pages: an audit log, a CA, an
// auth service on a bbolt file (tiny argon2id parameters), and mtls's
// gateway (which authenticates the session cookie) serving TLS 1.3 on
// 127.0.0.1 with the CA's own server certificate.
type env struct {
	url   string
	srv   *httptest.Server
	auth  *auth.Service
	ca    *ca.CA
	log   *audit.Log
	clk   *clock
	tls   *tls.Config // client side: trusts hearth's root only
	rootT string      // root's TOTP secret
	dir   string
	// agentHits counts the requests that reached the agent.
	agentHits *atomic.Int64
}

type envOpts struct {
	authCfg   auth.Config
	devices   webui.Devices // nil: the real CA
	providers []webui.OIDCProvider
	passkeys  bool // offer passkeys (the test calls auth's EnablePasskeys)
}

func newEnv(t *testing.T, eo envOpts) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	if err := audit.Init(dir); err != nil {
		t.Fatal(err)
	}
	lg, err := audit.Open(dir, audit.Config{}, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	if _, err := ca.Init(dir, ca.InitOptions{Name: "webui test"}); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(filepath.Join(dir, "hearth.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	pol, err := authz.New(authz.Config{})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	c, err := ca.Open(dir, ca.Config{}, ca.Options{Store: boltstore.New(db), Policy: pol, Audit: lg, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	acfg := eo.authCfg
	acfg.Argon2 = auth.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}
	as, err := auth.Open(boltstore.New(db), acfg, auth.Options{Policy: pol, Audit: lg, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { as.Close() })

	var devs webui.Devices = c
	if eo.devices != nil {
		devs = eo.devices
	}
	var pk webui.Passkeys
	if eo.passkeys {
		pk = as
	}
	ui := webui.New(webui.Options{
		Passkeys: pk,
		Auth:     as, Policy: pol, Devices: devs, Audit: lg, Recorder: lg,
		Enrollment: c, Users: as, AuditStatus: webui.LogStatus{Dir: dir, Log: lg},
		Household:     "The Testers' house",
		OIDCProviders: eo.providers, Now: clk.Now,
	})
	hearth := http.NewServeMux()
	hearth.Handle(webui.Prefix, ui.Handler())
	hits := new(atomic.Int64)
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "agent says hello to "+r.Header.Get(mtls.HeaderPrincipal))
	}))
	t.Cleanup(agent.Close)
	up, _ := url.Parse(agent.URL)
	gw, err := mtls.NewGateway(mtls.GatewayOptions{
		Policy: pol, Devices: c, Tokens: as, Audit: lg, Upstream: up, Hearth: hearth, Now: clk.Now,
		Routes: mtls.DefaultRoutes(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gw)
	srv.TLS = mtls.ServerTLSConfig(c.ServerCertificate(), c.ClientCAs())
	srv.StartTLS()
	t.Cleanup(srv.Close)

	e := &env{url: srv.URL, srv: srv, auth: as, ca: c, log: lg, clk: clk, dir: dir, agentHits: hits,
		tls: &tls.Config{RootCAs: c.Roots(), MinVersion: tls.VersionTLS13}}
	if err := as.AddUser(ctx, "alice", []string{"system:read"}, alicePw); err != nil {
		t.Fatal(err)
	}
	if err := as.AddUser(ctx, "root", []string{"system:admin"}, rootPw); err != nil {
		t.Fatal(err)
	}
	// hearth:admin over a token needs a second factor (authz defaults).
	secret, _, err := as.EnrollTOTP(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	if err := as.ConfirmTOTP(ctx, "root", e.totp(t, secret)); err != nil {
		t.Fatal(err)
	}
	clk.Add(30 * time.Second) // the next code is a new step
	e.rootT = secret
	return e
}

func (e *env) totp(t *testing.T, secret string) string {
	t.Helper()
	code, err := totp.GenerateCodeCustom(secret, e.clk.Now(), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// browser is a client with a cookie jar that does not follow redirects
// (the tests look at each 303).
func (e *env) browser(t *testing.T) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{TLSClientConfig: e.tls.Clone()}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport: tr, Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type resp struct {
	status int
	header http.Header
	body   string
}

func (e *env) do(t *testing.T, c *http.Client, method, path string, form url.Values, hdr http.Header) resp {
	t.Helper()
	var body io.Reader
	if form != nil {
		if !form.Has("csrf") {
			form = cloneValues(form)
			form.Set("csrf", e.csrf(t, c))
		}
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	r, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp{r.StatusCode, r.Header, string(b)}
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token of c's forms, read from the sign-in page (which
// sets c's CSRF cookie when it has none).
func (e *env) csrf(t *testing.T, c *http.Client) string {
	t.Helper()
	r := e.do(t, c, "GET", webui.LoginPath, nil, nil)
	return formToken(t, r.body)
}

func formToken(t *testing.T, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF field in the page:\n%s", body)
	}
	return html.UnescapeString(m[1])
}

// sameOrigin is what a browser sends on a form post from hearth's page.
func (e *env) sameOrigin() http.Header { return http.Header{"Origin": {e.url}} }

// login posts the form from the same origin.
func (e *env) login(t *testing.T, c *http.Client, user, pw, code string) resp {
	t.Helper()
	f := url.Values{"username": {user}, "password": {pw}}
	if code != "" {
		f.Set("totp", code)
	}
	return e.do(t, c, "POST", webui.LoginPath, f, e.sameOrigin())
}

// sessionCookie is the jar's session cookie for the server, or "".
func (e *env) sessionCookie(c *http.Client) string {
	u, _ := url.Parse(e.url)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == mtls.SessionCookie {
			return ck.Value
		}
	}
	return ""
}
