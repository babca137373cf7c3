package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/hearth-home/hearth/internal/testbrowser"
)

// deepQueryJS finds elements through open shadow roots (the Control UI is
// made of web components).
const deepQueryJS = `(function deep(sel, root) {
  root = root || document;
  const out = [...root.querySelectorAll(sel)];
  for (const el of root.querySelectorAll('*')) if (el.shadowRoot) out.push(...deep(sel, el.shadowRoot));
  return out;
})`

// browserChat has headless Chromium, holding a hearth session cookie and
// reaching hearth from the namespace's lan address (through a CONNECT
// proxy that dials from there), load the Control UI and exchange a chat
// message. deviceAutoApprove must spare it OpenClaw's pairing prompt.
func (h *ocHarness) browserChat(t *testing.T, token string) {
	t.Helper()
	proxy := h.lan.ConnectProxy(t, h.lan.LANClient)
	pin := serverSPKI(t, h)
	ctx := testbrowser.New(t, 6*time.Minute,
		chromedp.ProxyServer("http://"+proxy),
		chromedp.Flag("proxy-bypass-list", "<-loopback>"),
		chromedp.Flag("ignore-certificate-errors-spki-list", pin),
	)
	// On failure, a screenshot in the temp dir shows what the browser saw.
	shot := func(name string) {
		if buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
			os.WriteFile(filepath.Join(os.TempDir(), name), buf, 0o600)
		}
	}
	err := chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			yes := true
			_, err := cdp.Call(ctx, tg, network.SetCookie, network.SetCookieParams{
				Name: "__Host-hearth_session", Value: token, URL: h.base + "/", Path: "/",
				Secure: &yes, HTTPOnly: &yes, SameSite: network.CookieSameSiteStrict,
			})
			return err
		}),
		chromedp.Navigate(h.base+"/"),
	)
	if err == nil {
		// The UI is a single-page app: wait for its chat box.
		_, err = chromedp.Run(ctx, chromedp.Poll[bool](deepQueryJS+`('textarea[placeholder="Message Assistant"]').length > 0`, chromedp.WithPollingTimeout(60*time.Second)))
	}
	if err != nil {
		shot("h9-openclaw-ui-load.png")
		t.Fatalf("loading the Control UI: %v", err)
	}
	// The chat box is there and connected: no pairing prompt stands in
	// its way (deviceAutoApprove, capped by hearth's scopes header).
	if text := deepText(t, ctx); strings.Contains(strings.ToLower(text), "pairing required") || strings.Contains(strings.ToLower(text), "not paired") {
		t.Fatalf("the Control UI asks to pair:\n%.2000s", text)
	}
	calls := h.model.calls.Load()
	err = chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](deepQueryJS+`('textarea[placeholder="Message Assistant"]')[0].focus()`),
		chromedp.KeyEvent("hello from Chromium through hearth"),
		chromedp.KeyEvent("\r"),
	)
	if err != nil {
		t.Fatalf("typing a chat message: %v", err)
	}
	deadline := time.Now().Add(4 * time.Minute)
	for !strings.Contains(deepText(t, ctx), stubReply) {
		if time.Now().After(deadline) {
			shot("h9-openclaw-ui-chat.png")
			t.Fatalf("the model's answer did not appear in the Control UI within 4m (model called %d times); page:\n%.3000s", h.model.calls.Load()-calls, deepText(t, ctx))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// deepText is the page's visible text, shadow roots included.
func deepText(t *testing.T, ctx context.Context) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(function text(root) {
  let s = root === document ? document.body.innerText : '';
  for (const el of root.querySelectorAll('*')) if (el.shadowRoot) s += '\n' + el.shadowRoot.textContent + text(el.shadowRoot);
  return s;
})(document)`))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	return s
}

// serverSPKI is the base64 SHA-256 of the gateway certificate's public
// key, for Chromium's ignore-certificate-errors-spki-list.
func serverSPKI(t *testing.T, h *ocHarness) string {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(h.base, "https://"), rootTLS(t, filepath.Join(h.dir, "ca", "root_ca.crt")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
