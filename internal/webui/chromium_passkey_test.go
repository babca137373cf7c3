package webui_test

// Passkeys in a real browser: headless Chromium with a virtual
// authenticator (the DevTools protocol's WebAuthn domain, through
// chromedp) that makes and uses real WebAuthn credentials, so that the
// origin binding, user verification and sign counts hearth checks are the
// browser's own. The browser reaches hearth through a CONNECT proxy whose
// tunnels start inside a network namespace the test makes, from an
// address outside hearth's trusted networks: every request is from
// remote, as from a phone away from home. The origin stays
// https://localhost:PORT (a WebAuthn relying party is a host name, never
// an address), which the proxy routes to hearth's listener on the
// namespace's network.
//
// It needs Chromium (apt-get install -y chromium, or HEARTH_CHROMIUM),
// root and ip(8): under CI=true their absence fails it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/netnstest"
	"github.com/hearth-home/hearth/internal/testbrowser"
	"github.com/hearth-home/hearth/internal/webui"
	"github.com/hearth-home/hearth/mtls"
)

// remoteEnv is env with a second listener on the namespace's network, so
// that clients in the namespace reach hearth from a remote address.
type remoteEnv struct {
	*env
	lan    *netnstest.LAN
	origin string // https://localhost:PORT
	port   string
	route  func(string) string // localhost:P → RemoteHost:P
}

func newRemoteEnv(t *testing.T) *remoteEnv {
	t.Helper()
	testbrowser.Path(t) // fail early without Chromium
	lan := netnstest.New(t, "h14")
	e := newEnv(t, envOpts{passkeys: true})
	ln, err := net.Listen("tcp", net.JoinHostPort(lan.RemoteHost, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(e.srv.Config.Handler)
	srv.Listener.Close()
	srv.Listener = ln
	srv.TLS = e.srv.TLS
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	re := &remoteEnv{env: e, lan: lan, port: port, origin: "https://localhost:" + port}
	re.route = func(hp string) string {
		h, p, err := net.SplitHostPort(hp)
		if err != nil || h != "localhost" {
			return "0.0.0.0:0" // nothing else is reachable
		}
		return net.JoinHostPort(lan.RemoteHost, p)
	}
	e.url = re.origin // e.do and e.login go there, through re.client
	if err := e.auth.EnablePasskeys(re.origin, "The Testers' house"); err != nil {
		t.Fatal(err)
	}
	return re
}

// client is a Go HTTP client that, like the browser, reaches hearth at
// https://localhost:PORT from the namespace's remote address.
func (re *remoteEnv) client(t *testing.T) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	dial := re.lan.Dialer(re.lan.RemoteClient)
	tr := &http.Transport{
		TLSClientConfig: re.tls.Clone(),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dial(ctx, network, re.route(addr))
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// postJSON posts v as the page script does (same origin, CSRF token).
func (re *remoteEnv) postJSON(t *testing.T, c *http.Client, path string, v map[string]any) resp {
	t.Helper()
	r, err := c.Get(re.origin + webui.LoginPath)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(r.Body)
	r.Body.Close()
	v["csrf"] = formToken(t, string(page))
	b, _ := json.Marshal(v)
	req, _ := http.NewRequest("POST", re.origin+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", re.origin)
	r, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, string(body)}
}

// passkeyBrowser starts Chromium with its traffic through the
// namespace's remote address, trusting hearth's server key only, and a
// virtual authenticator that holds discoverable credentials and verifies
// its user (a phone's screen lock, say).
func (re *remoteEnv) passkeyBrowser(t *testing.T) (context.Context, webauthn.AuthenticatorID) {
	t.Helper()
	leaf, err := x509.ParseCertificate(re.ca.ServerCertificate().Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	proxy := re.lan.ConnectProxy(t, re.lan.RemoteClient, re.route)
	ctx := testbrowser.New(t, 5*time.Minute, // the whole test, on a busy 2-core machine under -race
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
		chromedp.ProxyServer("http://"+proxy),
		// Chromium sends localhost directly unless told not to.
		chromedp.Flag("proxy-bypass-list", "<-loopback>"),
	)
	if err := chromedp.Do(ctx, chromedp.Navigate(re.origin+webui.LoginPath)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatalf("WebAuthn.enable: %v", err)
	}
	return ctx, re.addAuthenticator(t, ctx)
}

func (re *remoteEnv) addAuthenticator(t *testing.T, ctx context.Context) webauthn.AuthenticatorID {
	t.Helper()
	a, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21, Transport: webauthn.AuthenticatorTransportInternal,
		HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true,
	}})
	if err != nil {
		t.Fatalf("WebAuthn.addVirtualAuthenticator: %v", err)
	}
	return a.AuthenticatorID
}

// do runs one step of the test in the browser, within a minute. A step
// that a network change interrupted (Chromium aborts loads with
// ERR_NETWORK_CHANGED when any interface on the machine comes or goes, as
// other tests' namespaces do) is run again, up to three times.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	var err error
	for range 3 {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		err = chromedp.Do(sctx, steps...)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "ERR_NETWORK_CHANGED") {
			break
		}
		t.Logf("browser, %s: %v; again", what, err)
	}
	if err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		loc, _ := chromedp.Run(dctx, chromedp.Location())
		body, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		t.Fatalf("browser, %s: %v (at %q; page: %.600s)", what, err, loc, body)
	}
}

// scriptReady waits until passkey.js has wired the page's buttons (a
// click before that would do nothing).
var scriptReady = chromedp.WaitReady(chromedp.CSS(`html[data-passkeys="ready"]`))

// browserToken is the browser's session cookie.
func (re *remoteEnv) browserToken(t *testing.T, ctx context.Context) string {
	t.Helper()
	cs, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{re.origin + webui.Prefix}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs.Cookies {
		if c.Name == mtls.SessionCookie {
			return c.Value
		}
	}
	return ""
}

// entries returns the audit entries since index from that match.
func (re *remoteEnv) entries(t *testing.T, from int64, match func(audit.Entry) bool) []audit.Entry {
	t.Helper()
	es, err := re.log.Tail(1000, func(en audit.Entry) bool { return en.Index >= from && match(en) })
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func (re *remoteEnv) lastIndex(t *testing.T) int64 {
	t.Helper()
	es, err := re.log.Tail(1, nil)
	if err != nil || len(es) == 0 {
		t.Fatalf("audit tail: %v", err)
	}
	return es[0].Index + 1
}

func (re *remoteEnv) signInWithPasskey(t *testing.T, ctx context.Context) {
	t.Helper()
	do(t, ctx, "sign in with a passkey",
		chromedp.Navigate(re.origin+webui.LoginPath),
		chromedp.WaitVisible(chromedp.ID("passkey-signin")),
		scriptReady,
		chromedp.Click(chromedp.ID("passkey-signin")),
		chromedp.WaitVisible(chromedp.ID("principal")),
	)
}

// refusedPasskey clicks "Sign in with a passkey" and expects the page to
// stay on the sign-in page with the refusal shown.
func (re *remoteEnv) refusedPasskey(t *testing.T, ctx context.Context) string {
	t.Helper()
	do(t, ctx, "a refused passkey sign-in",
		chromedp.Navigate(re.origin+webui.LoginPath),
		chromedp.WaitVisible(chromedp.ID("passkey-signin")),
		scriptReady,
		chromedp.Click(chromedp.ID("passkey-signin")),
		chromedp.WaitVisible(chromedp.ID("passkey-msg")),
	)
	msg := run(t, ctx, chromedp.Text(chromedp.ID("passkey-msg")))
	if loc := run(t, ctx, chromedp.Location()); loc != re.origin+webui.LoginPath {
		t.Fatalf("after a refused passkey the browser is at %s", loc)
	}
	return msg
}

func (re *remoteEnv) signOut(t *testing.T, ctx context.Context) {
	t.Helper()
	do(t, ctx, "sign out",
		chromedp.Navigate(re.origin+webui.Prefix),
		chromedp.WaitVisible(chromedp.ID("logout")),
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("passkey-signin")),
	)
}

func TestChromiumPasskeys(t *testing.T) {
	re := newRemoteEnv(t)
	ctx, authA := re.passkeyBrowser(t)

	// Sign in from remote with password + one-time code, and add a
	// passkey on the Account page (a fresh sign-in).
	do(t, ctx, "password sign-in",
		chromedp.Navigate(re.origin+webui.LoginPath),
		chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "root"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), rootPw),
		chromedp.SendKeys(chromedp.CSS(`input[name=totp]`), re.totp(t, re.rootT)),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("principal")),
	)
	re.clk.Add(30 * time.Second)
	mark := re.lastIndex(t)
	do(t, ctx, "add a passkey",
		chromedp.Navigate(re.origin+webui.AccountPath),
		chromedp.WaitVisible(chromedp.ID("passkey-add")),
		scriptReady,
		chromedp.SendKeys(chromedp.ID("passkey-label"), "laptop"),
		chromedp.Click(chromedp.ID("passkey-add")),
		chromedp.WaitVisible(chromedp.ID("passkey-done")),
	)
	ps, err := re.auth.Passkeys(context.Background(), "root")
	if err != nil || len(ps) != 1 || ps[0].Label != "laptop" {
		t.Fatalf("root's passkeys = %+v, %v; want one named laptop", ps, err)
	}
	if n := run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#passkey-list tr.passkey").length`)); n != 1 {
		t.Errorf("the Account page lists %d passkeys, want 1", n)
	}
	shots := screens(t)
	shoot(t, ctx, shots, "account-passkeys")
	if es := re.entries(t, mark, func(en audit.Entry) bool {
		return en.Name == audit.EventUserChange && en.Meta["action"] == "passkey-add" && en.Outcome == audit.OutcomeSuccess && en.Principal == "user:root"
	}); len(es) != 1 {
		t.Errorf("audit: %d passkey-add entries, want 1", len(es))
	}

	// A password + one-time-code session from remote, signed in now, to
	// compare with the passkey session below.
	totpClient := re.client(t)
	re.clk.Add(30 * time.Second)
	if r := re.login(t, totpClient, "root", rootPw, re.totp(t, re.rootT)); r.status != http.StatusSeeOther {
		t.Fatalf("password + code login from remote = %d", r.status)
	}

	// Sign out, and in again with the passkey alone: no name, no password.
	re.signOut(t, ctx)
	shoot(t, ctx, shots, "signin-passkeys")
	mark = re.lastIndex(t)
	re.signInWithPasskey(t, ctx)
	if who := run(t, ctx, chromedp.Text(chromedp.ID("principal"))); who != "user:root" {
		t.Fatalf("signed in with the passkey as %q, want user:root", who)
	}
	tok := re.browserToken(t, ctx)
	p, err := re.auth.AuthenticateToken(context.Background(), tok)
	if err != nil || !p.MFA || !p.PhishingResistant {
		t.Fatalf("the passkey session = %+v, %v; want multi-factor and phishing resistant", p, err)
	}
	if es := re.entries(t, mark, func(en audit.Entry) bool {
		return en.Name == audit.EventAuthLogin && en.Outcome == audit.OutcomeSuccess && en.Meta["method"] == "passkey" && en.Meta["phishing_resistant"] == "true"
	}); len(es) != 1 {
		t.Errorf("audit: %d passkey logins, want 1", len(es))
	}

	// 20 minutes on (inside the token's 30-minute idle limit): from
	// remote, the passkey session still reaches hearth:admin, which the
	// password + code session no longer does (15 minutes).
	re.clk.Add(20 * time.Minute)
	mark = re.lastIndex(t)
	do(t, ctx, "the Devices page from remote",
		chromedp.Navigate(re.origin+webui.DevicesPath),
		chromedp.WaitVisible(chromedp.CSS("main")),
	)
	if title := run(t, ctx, chromedp.Title()); !strings.HasPrefix(title, "Devices") {
		body := run(t, ctx, chromedp.Text(chromedp.CSS("main")))
		t.Fatalf("the passkey session from remote got %q on the Devices page: %.300s", title, body)
	}
	if es := re.entries(t, mark, func(en audit.Entry) bool {
		return en.Name == audit.EventAuthzDecision && en.Outcome == audit.OutcomeAllow && en.Meta["zone"] == "remote" && en.Principal == "user:root"
	}); len(es) == 0 {
		t.Errorf("audit: no allowed hearth:admin decision from zone remote for the passkey session")
	}
	if r := re.do2(t, totpClient, webui.DevicesPath); r.status != http.StatusForbidden || !strings.Contains(r.body, "15m0s old") && !strings.Contains(r.body, "at most 15m") {
		t.Errorf("the 20-minute-old password + code session from remote got %d on the Devices page, want 403 (too old):\n%.400s", r.status, r.body)
	}

	// No enumeration: the options for a known user with a passkey and for
	// an unknown name are alike — same status, same fields, same sizes —
	// and take alike long.
	t.Run("NoEnumeration", func(t *testing.T) { re.checkNoEnumeration(t) })

	// A passkey answer made on another origin (a look-alike site that
	// relays hearth's challenge) is refused and audited.
	t.Run("OtherOrigin", func(t *testing.T) { re.checkOtherOrigin(t, ctx) })

	// A cloned authenticator: the credential copied into a second
	// authenticator whose sign count is behind hearth's.
	creds, err := chromedp.Call(ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: authA})
	if err != nil || len(creds.Credentials) != 1 {
		t.Fatalf("WebAuthn.getCredentials = %d, %v", len(creds.Credentials), err)
	}
	cred := *creds.Credentials[0]
	if cred.SignCount < 1 {
		t.Fatalf("the virtual authenticator's sign count is %v; the clone check needs one that counts", cred.SignCount)
	}
	re.signOut(t, ctx)
	if _, err := chromedp.Call(ctx, webauthn.RemoveVirtualAuthenticator, webauthn.RemoveVirtualAuthenticatorParams{AuthenticatorID: authA}); err != nil {
		t.Fatal(err)
	}
	authB := re.addAuthenticator(t, ctx)
	clone := cred
	clone.SignCount = 0
	if err := addCredential(ctx, authB, clone); err != nil {
		t.Fatalf("WebAuthn.addCredential: %v", err)
	}
	mark = re.lastIndex(t)
	if msg := re.refusedPasskey(t, ctx); !strings.Contains(msg, "did not work") {
		t.Errorf("the cloned passkey's refusal reads %q", msg)
	}
	if es := re.entries(t, mark, func(en audit.Entry) bool {
		return en.Name == audit.EventAuthLogin && en.Outcome == audit.OutcomeFailure && en.Meta["clone_warning"] == "true" && en.Resource == "user:root"
	}); len(es) != 1 {
		t.Errorf("audit: %d sign-count regressions recorded, want 1", len(es))
	}

	// The copy that is ahead still works (hearth kept its count).
	if _, err := chromedp.Call(ctx, webauthn.RemoveVirtualAuthenticator, webauthn.RemoveVirtualAuthenticatorParams{AuthenticatorID: authB}); err != nil {
		t.Fatal(err)
	}
	authC := re.addAuthenticator(t, ctx)
	ahead := cred
	ahead.SignCount = cred.SignCount + 100
	if err := addCredential(ctx, authC, ahead); err != nil {
		t.Fatalf("WebAuthn.addCredential: %v", err)
	}
	re.signInWithPasskey(t, ctx)

	// A passkey as the second factor after a password.
	re.signOut(t, ctx)
	do(t, ctx, "password + passkey",
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "root"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), rootPw),
		scriptReady,
		chromedp.Click(chromedp.ID("passkey-second")),
		chromedp.WaitVisible(chromedp.ID("principal")),
	)
	if p, err := re.auth.AuthenticateToken(context.Background(), re.browserToken(t, ctx)); err != nil || !p.MFA || !p.PhishingResistant {
		t.Fatalf("the password + passkey session = %+v, %v; want multi-factor and phishing resistant", p, err)
	}

	// Recovery codes still work for someone whose passkey is lost: a code
	// sets a new password (every session ends), the password signs in,
	// and the passkeys are left as they were.
	codes, err := re.auth.RegenerateRecoveryCodes(context.Background(), "root")
	if err != nil {
		t.Fatal(err)
	}
	const newPw = "saffron-harbour-73-lighthouse"
	if err := re.auth.Recover(context.Background(), auth.RecoverRequest{Username: "root", RecoveryCode: codes[0], NewPassword: newPw, Client: re.lan.RemoteClient + ":1"}); err != nil {
		t.Fatalf("Recover with a passkey registered: %v", err)
	}
	re.clk.Add(30 * time.Second)
	if r := re.login(t, re.client(t), "root", newPw, re.totp(t, re.rootT)); r.status != http.StatusSeeOther {
		t.Errorf("sign-in with the recovered password = %d", r.status)
	}
	if ps, _ := re.auth.Passkeys(context.Background(), "root"); len(ps) != 1 {
		t.Errorf("after recovery root has %d passkeys, want 1", len(ps))
	}
	re.signInWithPasskey(t, ctx) // recovery ended the browser's session

	// An admin can remove a user's passkeys but never add one.
	local := authz.WithPrincipal(context.Background(), &authz.Principal{ID: "user:local", Kind: authz.KindUser, Method: authz.MethodLocal, Zone: authz.ZoneLAN})
	if _, err := re.auth.BeginPasskeyRegistration(local, "root", re.clk.Now()); !errors.Is(err, auth.ErrNotSelf) {
		t.Errorf("an admin adding a passkey for root: %v, want ErrNotSelf", err)
	}

	// Remove it on the Account page; then sign-in with it is refused.
	mark = re.lastIndex(t)
	do(t, ctx, "remove the passkey",
		chromedp.Navigate(re.origin+webui.AccountPath),
		chromedp.WaitVisible(chromedp.CSS(".passkey-remove")),
		chromedp.Click(chromedp.CSS(".passkey-remove")),
		chromedp.WaitVisible(chromedp.ID("passkey-done")),
	)
	if ps, _ := re.auth.Passkeys(context.Background(), "root"); len(ps) != 0 {
		t.Fatalf("after removal root has %d passkeys", len(ps))
	}
	if es := re.entries(t, mark, func(en audit.Entry) bool {
		return en.Name == audit.EventUserChange && en.Meta["action"] == "passkey-remove"
	}); len(es) != 1 {
		t.Errorf("audit: %d passkey-remove entries, want 1", len(es))
	}
	re.signOut(t, ctx)
	mark = re.lastIndex(t)
	re.refusedPasskey(t, ctx)
	if es := re.entries(t, mark, func(en audit.Entry) bool {
		return en.Name == audit.EventAuthLogin && en.Outcome == audit.OutcomeFailure && en.Reason == "unknown passkey"
	}); len(es) != 1 {
		t.Errorf("audit: %d refusals of the removed passkey, want 1", len(es))
	}
}

// addCredential is WebAuthn.addCredential with only the fields a plain
// CTAP2 authenticator takes: cdproto's Credential always sends the
// CMTG extension's field, which such an authenticator refuses.
func addCredential(ctx context.Context, id webauthn.AuthenticatorID, c webauthn.Credential) error {
	cmd := cdp.Command[map[string]any, cdp.Empty]{Method: webauthn.CommandAddCredential}
	_, err := chromedp.Call(ctx, cmd, map[string]any{"authenticatorId": id, "credential": map[string]any{
		"credentialId": base64.StdEncoding.EncodeToString(c.CredentialID), "isResidentCredential": c.IsResidentCredential,
		"rpId": c.RpID, "privateKey": base64.StdEncoding.EncodeToString(c.PrivateKey),
		"userHandle": base64.StdEncoding.EncodeToString(c.UserHandle), "signCount": c.SignCount,
	}})
	return err
}

// do2 is a GET through c.
func (re *remoteEnv) do2(t *testing.T, c *http.Client, path string) resp {
	t.Helper()
	r, err := c.Get(re.origin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, string(b)}
}

// shape is a JSON value with every string replaced by its length and
// every array by its length and the shape of its elements.
func shape(v any) any {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string(%d)", len(x))
	case []any:
		out := []any{len(x)}
		for _, e := range x {
			out = append(out, shape(e))
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = shape(e)
		}
		return out
	}
	return v
}

func (re *remoteEnv) checkNoEnumeration(t *testing.T) {
	c := re.client(t)
	const n = 60
	var shapes [2]string
	var took [2][]time.Duration
	for i := range 2 * n {
		who := []string{"root", "nobody-at-all"}[i%2]
		start := time.Now()
		r := re.postJSON(t, c, webui.PasskeyLoginOptions, map[string]any{"username": who})
		took[i%2] = append(took[i%2], time.Since(start))
		if r.status != http.StatusOK {
			t.Fatalf("options for %s = %d %s", who, r.status, r.body)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(r.body), &v); err != nil {
			t.Fatal(err)
		}
		s, _ := json.Marshal(shape(v))
		if shapes[i%2] == "" {
			shapes[i%2] = string(s)
		} else if shapes[i%2] != string(s) {
			t.Fatalf("the options for %s changed shape: %s, then %s", who, shapes[i%2], s)
		}
	}
	if shapes[0] != shapes[1] {
		t.Errorf("options differ for a known user with a passkey and an unknown name:\n%s\n%s", shapes[0], shapes[1])
	}
	med := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	known, unknown := med(took[0]), med(took[1])
	// Loose bounds: no lookup happens for either, so a real difference
	// (a store read, an argon2id run) would be many times the noise.
	if ratio := float64(known) / float64(unknown); ratio < 0.5 || ratio > 2 {
		t.Errorf("median time of the options: known %v, unknown %v (ratio %.2f), want alike", known, unknown, ratio)
	}
	t.Logf("median time of the options (including a page load for the CSRF token): known %v, unknown %v", known, unknown)
}

// checkOtherOrigin gets a sign-in challenge from hearth, has the browser
// answer it on a page of another origin (https://localhost:OTHER, where
// the same RP ID makes the authenticator willing), and relays the answer
// to hearth, which refuses it: the origin in the signed client data is
// not hearth's.
func (re *remoteEnv) checkOtherOrigin(t *testing.T, ctx context.Context) {
	ln, err := net.Listen("tcp", net.JoinHostPort(re.lan.RemoteHost, "0"))
	if err != nil {
		t.Fatal(err)
	}
	evil := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<!doctype html><title>hearth (not really)</title><p>Sign in</p>`)
	}))
	evil.Listener.Close()
	evil.Listener = ln
	evil.TLS = &tls.Config{Certificates: []tls.Certificate{*re.ca.ServerCertificate()}}
	evil.StartTLS()
	t.Cleanup(evil.Close)
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	c := re.client(t)
	r := re.postJSON(t, c, webui.PasskeyLoginOptions, map[string]any{})
	var o struct {
		Ceremony  string          `json:"ceremony"`
		PublicKey json.RawMessage `json:"publicKey"`
	}
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &o) != nil {
		t.Fatalf("options = %d %s", r.status, r.body)
	}
	do(t, ctx, "the other origin", chromedp.Navigate("https://localhost:"+port+"/"))
	answer, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.credentials.get({publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(`+string(o.PublicKey)+`)}).then(c => JSON.stringify(c.toJSON()))`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("the other origin's navigator.credentials.get: %v", err)
	}
	if !strings.Contains(answer, "authenticatorData") {
		t.Fatalf("no assertion from the other origin: %s", answer)
	}
	mark := re.lastIndex(t)
	r = re.postJSON(t, c, webui.PasskeyLoginFinish, map[string]any{"ceremony": o.Ceremony, "credential": json.RawMessage(answer)})
	if r.status != http.StatusUnauthorized || strings.Contains(r.body, "hth_at_") {
		t.Fatalf("an answer made on another origin = %d %s, want 401", r.status, r.body)
	}
	if es := re.entries(t, mark, func(en audit.Entry) bool {
		return en.Name == audit.EventAuthLogin && en.Outcome == audit.OutcomeFailure && en.Resource == "user:root" && strings.Contains(strings.ToLower(en.Reason), "origin")
	}); len(es) != 1 {
		all := re.entries(t, mark, func(audit.Entry) bool { return true })
		t.Errorf("audit: no failure naming the origin for the other origin's answer: %+v", all)
	}
}
