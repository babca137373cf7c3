package webui_test

// The login form in a real browser: headless Chromium driven over the
// DevTools protocol (chromedp), as auth/oidc's browser test does. The
// browser applies its real rules: the __Host- prefix, Secure, HttpOnly and
// SameSite=Strict on the session cookie, the Origin header on the form
// post, and the page's CSP.
//
// The test needs Chromium: `apt-get install -y chromium` (Debian), or set
// HEARTH_CHROMIUM to the browser's path. Without it the test fails — a
// security property that is not checked is not assumed.

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/hearth-home/hearth/internal/testbrowser"
	"github.com/hearth-home/hearth/internal/webui"
	"github.com/hearth-home/hearth/mtls"
)

// run runs one browser action that yields a value.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

func TestChromiumLoginForm(t *testing.T) {
	e := newEnv(t, envOpts{})
	leaf, err := x509.ParseCertificate(e.ca.ServerCertificate().Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	ctx := testbrowser.New(t, 20*time.Second,
		// Trust exactly hearth's server key (its root is not in the
		// browser's store); TLS is otherwise as strict as in use.
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
	)

	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+webui.Prefix)); err != nil { // no session: sent to the login page
		t.Fatalf("navigate: %v", err)
	}
	if os.Getenv("DEBUG_CHROME") != "" {
		t.Logf("at %s: %s", run(t, ctx, chromedp.Location()), run(t, ctx, chromedp.OuterHTML(chromedp.CSS("html"))))
	}
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), alicePw),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`#principal, #message`)),
	)
	if err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		loc, _ := chromedp.Run(dctx, chromedp.Location())
		t.Fatalf("browser login: %v (at %q)", err, loc)
	}
	if who := run(t, ctx, chromedp.Text(chromedp.CSS(`#principal, #message`))); who != "user:alice" {
		t.Fatalf("the page shows %q, want user:alice", who)
	}
	if loc := run(t, ctx, chromedp.Location()); loc != e.url+webui.Prefix {
		t.Errorf("after login the browser is at %s, want %s", loc, e.url+webui.Prefix)
	}
	if cookies := run(t, ctx, chromedp.Evaluate[string](`document.cookie`)); strings.Contains(cookies, "hearth_session") {
		t.Errorf("scripts can read the session cookie: %q", cookies)
	}
	// The browser holds the cookie with the attributes hearth set, and
	// its token is alice's live session.
	cs, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{e.url + webui.Prefix}})
	if err != nil {
		t.Fatalf("browser cookies: %v", err)
	}
	tok := ""
	for _, c := range cs.Cookies {
		if c.Name == mtls.SessionCookie {
			tok = c.Value
			if !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict || c.Path != "/" {
				t.Errorf("browser cookie HttpOnly=%v Secure=%v SameSite=%q Path=%q, want HttpOnly, Secure, Strict, /", c.HTTPOnly, c.Secure, c.SameSite, c.Path)
			}
		}
	}
	if p, err := e.auth.AuthenticateToken(context.Background(), tok); err != nil || p.ID != "user:alice" {
		t.Fatalf("the browser's session cookie is not alice's live token: %v", err)
	}

	// Sign out with the page's own button: back to the login page, and the
	// token is dead.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)),
	)
	if err != nil {
		t.Fatalf("browser logout: %v", err)
	}
	if loc := run(t, ctx, chromedp.Location()); loc != e.url+webui.LoginPath {
		t.Errorf("after logout the browser is at %s, want the login page", loc)
	}
	if _, err := e.auth.AuthenticateToken(context.Background(), tok); err == nil {
		t.Errorf("alice's token still authenticates after the browser's logout")
	}
}
