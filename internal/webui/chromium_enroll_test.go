package webui_test

// Enrolling a phone in real headless Chromium, as a household would: the
// owner signs in and adds a device in one browser profile; a second
// profile (its own --user-data-dir and its own NSS database under its own
// HOME, as Debian's Chromium keeps certificates in $HOME/.pki/nssdb) opens
// the one-time link, presses the button, downloads the PKCS#12 with the
// password the page shows; pk12util (Debian's libnss3-tools) imports it;
// a managed policy (AutoSelectCertificateForUrls, scoped to this test's
// own origin, removed at cleanup) lets the browser present it without a
// dialog; the browser then reaches the agent over mTLS, a cross-site form
// cannot use the certificate, the owner revokes it on the Devices page, the
// next request is refused, and the Audit page shows what happened.
//
// Needs chromium, pk12util and certutil: apt-get install -y chromium
// libnss3-tools. Missing tools fail the test under CI=true and skip it
// (naming them) elsewhere.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/hearth-home/hearth/internal/testbrowser"
	"github.com/hearth-home/hearth/internal/webui"
)

// policyDir is where Debian's Chromium reads managed policies.
const policyDir = "/etc/chromium/policies/managed"

// needTools returns the paths of the NSS tools, failing under CI and
// skipping elsewhere when one is missing.
func needTools(t *testing.T) (pk12util, certutil string) {
	t.Helper()
	var missing []string
	find := func(n string) string {
		p, err := exec.LookPath(n)
		if err != nil {
			missing = append(missing, n)
		}
		return p
	}
	pk12util, certutil = find("pk12util"), find("certutil")
	if len(missing) > 0 {
		msg := fmt.Sprintf("%s not found: apt-get install -y libnss3-tools", strings.Join(missing, ", "))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return
}

// screens is where the screenshots go: $HEARTH_SCREENSHOTS, or a
// temporary folder.
func screens(t *testing.T) string {
	if d := os.Getenv("HEARTH_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// shoot saves full-page screenshots of the current page at a phone's
// (390×844, touch) and a laptop's (1280×800) size, as <name>-390.png and
// <name>-1280.png.
func shoot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	for _, s := range []struct {
		w, h   int64
		mobile bool
	}{{390, 844, true}, {1280, 800, false}} {
		var opts []chromedp.EmulateViewportOption
		if s.mobile {
			opts = append(opts, chromedp.EmulateMobile, chromedp.EmulatePortrait)
		}
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(s.w, s.h, opts...)); err != nil {
			t.Fatalf("viewport: %v", err)
		}
		b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d.png", name, s.w)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// must runs steps in the browser on ctx (whose first use starts the
// browser, so it is not run on a derived context) and, when they fail,
// reports the page's state, reading it within 5 seconds.
func must(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		loc, _ := chromedp.Run(dctx, chromedp.Location())
		body, _ := chromedp.Run(dctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("browser: %s: %v (at %s)\n%s", what, err, loc, body)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return strings.TrimSpace(run(t, ctx, chromedp.Text(chromedp.CSS(sel))))
}

// pinFlag makes the browser accept exactly hearth's server key.
func pinFlag(t *testing.T, e *env) chromedp.ExecAllocatorOption {
	leaf, err := x509.ParseCertificate(e.ca.ServerCertificate().Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:]))
}

// autoSelectPolicy writes a managed policy that selects any client
// certificate for origin, and removes it at cleanup.
func autoSelectPolicy(t *testing.T, origin string) {
	t.Helper()
	created := false
	if _, err := os.Stat(policyDir); os.IsNotExist(err) {
		if err := os.MkdirAll(policyDir, 0o755); err != nil {
			t.Fatalf("cannot create %s (the test runs as root in CI): %v", policyDir, err)
		}
		created = true
	}
	rnd := make([]byte, 6)
	rand.Read(rnd)
	p := filepath.Join(policyDir, "hearth-i10-test-"+hex.EncodeToString(rnd)+".json")
	rule, _ := json.Marshal(map[string]any{"pattern": origin, "filter": map[string]any{}})
	b, _ := json.Marshal(map[string]any{"AutoSelectCertificateForUrls": []string{string(rule)}})
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(p)
		if created {
			os.Remove(policyDir) // only if empty
		}
	})
}

func TestChromiumEnrollPhone(t *testing.T) {
	pk12util, certutil := needTools(t)
	e := newEnv(t, envOpts{})
	shots := screens(t)
	pin := pinFlag(t, e)
	autoSelectPolicy(t, e.url)

	// The owner's profile.
	owner := testbrowser.New(t, 90*time.Second, pin)
	must(t, owner, "open the sign-in page", chromedp.Navigate(e.url+webui.Prefix), chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)))
	shoot(t, owner, shots, "signin")
	must(t, owner, "sign in",
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "root"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), rootPw),
		chromedp.SendKeys(chromedp.CSS(`input[name=totp]`), e.totp(t, e.rootT)),
		chromedp.Click(chromedp.CSS(`form.login button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`#principal`)),
	)
	if who := text(t, owner, "#principal"); who != "user:root" {
		t.Fatalf("signed in as %q", who)
	}
	shoot(t, owner, shots, "home")
	must(t, owner, "devices page", chromedp.Navigate(e.url+webui.DevicesPath), chromedp.WaitVisible(chromedp.CSS(`#add-device`)))
	must(t, owner, "add a device",
		chromedp.SendKeys(chromedp.CSS(`#name`), "alices-phone"),
		chromedp.Click(chromedp.CSS(`input[value="system:write"]`)),
		chromedp.Click(chromedp.CSS(`#add-device button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`#enroll-link`)),
	)
	shoot(t, owner, shots, "device-qr")
	link := text(t, owner, "#enroll-link")
	if !strings.HasPrefix(link, "https://") || !strings.Contains(link, "/.hearth/ui/enroll/") {
		t.Fatalf("enrollment link %q", link)
	}
	// The test server's address, not the CA's configured public URL.
	link = e.url + link[strings.Index(link, "/.hearth/"):]

	// The phone's profile: its own data dir and its own HOME (NSS db).
	home := t.TempDir()
	nssdb := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(nssdb, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(certutil, "-N", "-d", "sql:"+nssdb, "--empty-password").CombinedOutput(); err != nil {
		t.Fatalf("certutil -N: %v\n%s", err, out)
	}
	profile := t.TempDir()
	downloads := t.TempDir()
	phoneOpts := []chromedp.ExecAllocatorOption{pin, chromedp.UserDataDir(profile), chromedp.Env("HOME=" + home)}
	phone := testbrowser.New(t, 90*time.Second, phoneOpts...)
	if _, err := chromedp.CallBrowser(phone, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads,
	}); err != nil {
		t.Fatalf("download behaviour: %v", err)
	}
	must(t, phone, "open the link", chromedp.Navigate(link+"?p=linux"), chromedp.WaitVisible(chromedp.CSS(`#claim-button`)))
	// Opening it twice consumes nothing.
	must(t, phone, "open the link again", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#claim-button`)))
	shoot(t, phone, shots, "enroll")
	must(t, phone, "claim", chromedp.Click(chromedp.CSS(`#claim-button`)), chromedp.WaitVisible(chromedp.CSS(`#p12-password`)))
	shoot(t, phone, shots, "enroll-password")
	password := strings.Join(strings.Fields(text(t, phone, "#p12-password")), "")
	must(t, phone, "download", chromedp.Click(chromedp.CSS(`#download-p12`)))
	var p12 string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && p12 == ""; time.Sleep(100 * time.Millisecond) {
		if m, _ := filepath.Glob(filepath.Join(downloads, "*.p12")); len(m) == 1 {
			if fi, err := os.Stat(m[0]); err == nil && fi.Size() > 0 {
				p12 = m[0]
			}
		}
	}
	if p12 == "" {
		t.Fatalf("no .p12 downloaded into %s", downloads)
	}
	if out, err := exec.Command(pk12util, "-i", p12, "-d", "sql:"+nssdb, "-W", password, "-K", "").CombinedOutput(); err != nil {
		t.Fatalf("pk12util -i with the page's password: %v\n%s", err, out)
	}
	// The same link again, in the same browser: refused.
	must(t, phone, "reuse the link", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS(`#message`)))
	if msg := text(t, phone, "#message"); !strings.Contains(msg, "already used") {
		t.Errorf("reused link says %q", msg)
	}
	shoot(t, phone, shots, "enroll-used")

	// Restart the phone's browser so that it reads its NSS database, then
	// reach the agent over mTLS.
	if err := chromedp.Cancel(phone); err != nil {
		t.Fatalf("closing the phone's browser: %v", err)
	}
	phone = testbrowser.New(t, 90*time.Second, phoneOpts...)
	before := e.agentHits.Load()
	must(t, phone, "reach the agent", chromedp.Navigate(e.url+"/api/status"), chromedp.WaitVisible(chromedp.CSS(`body`)))
	if got := text(t, phone, "body"); got != "agent says hello to device:alices-phone" {
		t.Fatalf("the phone's browser got %q, want the agent's answer to device:alices-phone", got)
	}
	must(t, phone, "home as the device", chromedp.Navigate(e.url+webui.Prefix), chromedp.WaitVisible(chromedp.CSS(`#principal`)))
	if who := text(t, phone, "#principal"); who != "device:alices-phone" {
		t.Errorf("the phone's home page says %q", who)
	}
	shoot(t, phone, shots, "home-device")

	// A cross-site form post from another origin, which the browser sends
	// with the device certificate: refused, the agent untouched.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<!doctype html><form method="post" action="`+e.url+`/api/plugins/install"><input name="plugin" value="evil"></form><script>document.forms[0].submit()</script>`)
	}))
	t.Cleanup(evil.Close)
	hits := e.agentHits.Load()
	must(t, phone, "cross-site form", chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.CSS(`body`)))
	var got string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		loc, _ := chromedp.Run(phone, chromedp.Location())
		if strings.HasPrefix(loc, e.url) {
			got, _ = chromedp.Run(phone, chromedp.Text(chromedp.CSS("body")))
			if got != "" {
				break
			}
		}
	}
	if !strings.Contains(got, `"code":"cross_site"`) {
		t.Errorf("the cross-site form post got %q, want the cross_site refusal", got)
	}
	if n := e.agentHits.Load(); n != hits {
		t.Errorf("the agent saw %d requests from the cross-site form", n-hits)
	}
	if e.agentHits.Load() <= before {
		t.Errorf("the agent never saw the phone")
	}

	// The owner's other pages, then revoke on the Devices page.
	for _, pg := range []struct{ name, path, wait string }{
		{"devices", webui.DevicesPath, "#devices"},
		{"users", webui.UsersPath, "#users"},
		{"account", webui.AccountPath, "#account-user"},
	} {
		must(t, owner, pg.name, chromedp.Navigate(e.url+pg.path), chromedp.WaitVisible(chromedp.CSS(pg.wait)))
		shoot(t, owner, shots, pg.name)
	}
	must(t, owner, "revoke", chromedp.Navigate(e.url+webui.DevicesPath), chromedp.Click(chromedp.CSS(`a.revoke[href$="/alices-phone/revoke"]`)), chromedp.WaitVisible(chromedp.CSS(`#confirm-revoke`)))
	shoot(t, owner, shots, "revoke")
	must(t, owner, "confirm", chromedp.Click(chromedp.CSS(`#confirm-revoke`)), chromedp.WaitVisible(chromedp.CSS(`#revoked`)))
	shoot(t, owner, shots, "devices-revoked")
	must(t, phone, "after revocation", chromedp.Navigate(e.url+"/api/status"), chromedp.WaitVisible(chromedp.CSS(`body`)))
	if got := text(t, phone, "body"); !strings.Contains(got, `"code":"unauthenticated"`) {
		t.Errorf("after revocation the phone's browser got %q, want 401 unauthenticated", got)
	}
	// The Audit page tells the story.
	must(t, owner, "audit", chromedp.Navigate(e.url+webui.AuditPath), chromedp.WaitVisible(chromedp.CSS(`#audit`)))
	shoot(t, owner, shots, "audit")
	events := run(t, owner, chromedp.Text(chromedp.CSS(`#audit`)))
	for _, want := range []string{"device.add", "device.enroll", "cert.revoke", "device:alices-phone", "cross-site"} {
		if !strings.Contains(events, want) {
			t.Errorf("the Audit page lacks %q", want)
		}
	}
	if v := text(t, owner, "#verify"); !strings.HasPrefix(v, "passes") {
		t.Errorf("verify says %q", v)
	}
	// The remaining pages, for the screenshots: a setup code for a new
	// person, the one-time-code enrolment, the sign-in side pages, and
	// the refusal a password-only session gets.
	must(t, owner, "add a person", chromedp.Navigate(e.url+webui.UsersPath), chromedp.WaitVisible(chromedp.CSS(`#add-user`)),
		chromedp.SendKeys(chromedp.CSS(`#add-user input[name=name]`), "gran"),
		chromedp.Click(chromedp.CSS(`#add-user button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(`#setup-code`)))
	shoot(t, owner, shots, "users-setup-code")
	must(t, owner, "one-time code", chromedp.Navigate(e.url+webui.AccountPath), chromedp.Click(chromedp.CSS(`#totp-start`)), chromedp.WaitVisible(chromedp.CSS(`#totp-secret`)))
	shoot(t, owner, shots, "account-totp")
	anon := testbrowser.New(t, 60*time.Second, pin)
	for _, pg := range []struct{ name, path string }{{"recover", webui.RecoverPath}, {"reset", webui.ResetPath}} {
		must(t, anon, pg.name, chromedp.Navigate(e.url+pg.path), chromedp.WaitVisible(chromedp.CSS(`#code`)))
		shoot(t, anon, shots, pg.name)
	}
	must(t, anon, "alice signs in", chromedp.Navigate(e.url+webui.LoginPath), chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), alicePw),
		chromedp.Click(chromedp.CSS(`form.login button[type=submit]`)), chromedp.WaitVisible(chromedp.CSS(`#principal`)),
		chromedp.Navigate(e.url+webui.DevicesPath), chromedp.WaitVisible(chromedp.CSS(`#message`)))
	if msg := text(t, anon, "#message"); !strings.Contains(msg, "lacks hearth:admin") {
		t.Errorf("alice's Devices page says %q", msg)
	}
	shoot(t, anon, shots, "denied")
	t.Logf("screenshots in %s", shots)
}
