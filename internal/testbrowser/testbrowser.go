// Package testbrowser exists for tests only: it starts the headless
// Chromium that hearth's browser tests (auth/oidc, internal/webui) drive
// over the DevTools protocol with chromedp, so that cookie rules (the
// __Host- prefix, Secure, HttpOnly, SameSite), the Origin header and the
// CSP are checked by a real browser rather than assumed.
//
// It is not imported by any non-test code, and it trusts nothing: each
// caller says which server key the browser accepts (see New's extra
// options). A test that needs the browser fails, never skips, when Chromium
// is missing — a security property that is not checked is not assumed.
package testbrowser

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// EnvPath names the environment variable that, when set, gives the path of
// the Chromium binary to run instead of looking it up on PATH.
const EnvPath = "HEARTH_CHROMIUM"

// names are the binaries looked up on PATH, in order, when EnvPath is unset.
var names = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// Path returns the Chromium binary to run: $HEARTH_CHROMIUM if set, else the
// first of chromium, chromium-browser, google-chrome, google-chrome-stable on
// PATH. If there is none it fails the test with how to install one.
func Path(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvPath); p != "" {
		return p
	}
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("headless Chromium is required for the browser test and was not found on PATH: " +
		"install it (Debian: apt-get install -y chromium) or set HEARTH_CHROMIUM to its path")
	return ""
}

// New starts a headless Chromium (see Path) with its own temporary
// --user-data-dir and returns a chromedp context for one tab in it, bounded
// by timeout. The flags are chromedp's defaults plus --headless,
// --no-sandbox (the CI runs as root), --disable-gpu, --no-first-run and
// --disable-background-networking; extra options (for example
// chromedp.Flag("ignore-certificate-errors-spki-list", pin)) are added
// after them. The context is cancelled and the browser stopped at
// t.Cleanup, before the data directory is removed.
func New(t testing.TB, timeout time.Duration, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := Path(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // the CI runs as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		// t.TempDir's removal is registered first, so it runs after the
		// browser has exited (t.Cleanup is last-in, first-out).
		chromedp.UserDataDir(t.TempDir()),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	t.Cleanup(cancelT)
	return ctx
}
