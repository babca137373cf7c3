package oidc

// The browser flow in a real browser: headless Chromium driven over the
// DevTools protocol (chromedp). hearth and the provider answer as two
// different sites (hearth.test and idp.test, both on 127.0.0.1), so the
// browser applies its real cookie rules: the __Host- prefix, Secure,
// SameSite=Lax for the login state on the provider's cross-site redirect
// back, SameSite=Strict and HttpOnly for the session cookie.
//
// The test needs Chromium: `apt-get install -y chromium` (Debian), or set
// HEARTH_CHROMIUM to the browser's path. Without it the test fails — a
// security property that is not checked is not assumed.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hearth-home/hearth/internal/testbrowser"
)

// testNames mints a CA and a certificate for hearth.test and idp.test, and
// a Go transport that trusts the CA and resolves *.test to 127.0.0.1. It
// returns the SPKI pin Chromium is told to accept.
func testNames(t *testing.T) (*netNames, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "oidc test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "hearth.test"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: []string{"hearth.test", "idp.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if strings.HasSuffix(host, ".test") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return &netNames{
		hearthHost: "hearth.test", idpHost: "idp.test",
		tls: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey, Leaf: leaf}}},
		tr:  tr,
	}, base64.StdEncoding.EncodeToString(spki[:])
}

func TestChromiumLogin(t *testing.T) {
	names, pin := testNames(t)
	hs := newHarnessNet(t, names, nil)
	hs.ids.LinkIdentity(context.Background(), "alice", hs.op.issuer, "sub-alice")

	ctx := testbrowser.New(t, 60*time.Second,
		chromedp.Flag("host-resolver-rules", "MAP *.test 127.0.0.1"),
		// Trust exactly the test certificate's key; everything else about
		// TLS stays as strict as in a real deployment.
		chromedp.Flag("ignore-certificate-errors-spki-list", pin),
	)

	if err := chromedp.Do(ctx, chromedp.Navigate(hs.base+PathPrefix+"test/login?return="+"/test/whoami")); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	if os.Getenv("DEBUG_CHROME") != "" {
		t.Logf("at %s: %s", run(t, ctx, chromedp.Location()), run(t, ctx, chromedp.OuterHTML(chromedp.CSS("html"))))
	}
	err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "alice-pw"),
		chromedp.Submit(chromedp.CSS(`form`)),
		// Provider → hearth's callback → the continue page → /test/whoami.
		chromedp.WaitVisible(chromedp.ID("whoami")),
	)
	if err != nil {
		t.Fatalf("browser flow: %v", err)
	}
	who := run(t, ctx, chromedp.Text(chromedp.ID("whoami")))
	scriptCookies := run(t, ctx, chromedp.Evaluate[string](`document.cookie`))
	finalURL := run(t, ctx, chromedp.Location())
	// The SameSite=Strict session cookie reached the return path: the
	// continue page makes that navigation same-site.
	if who != "session=hearth-token-alice-1" {
		t.Fatalf("the agent page saw %q, want the session cookie hearth-token-alice-1", who)
	}
	if finalURL != hs.base+"/test/whoami" {
		t.Errorf("final URL = %s, want the return path on hearth", finalURL)
	}
	if strings.Contains(scriptCookies, "hearth_session") || strings.Contains(scriptCookies, "hearth_oidc") {
		t.Errorf("scripts can read hearth's cookies: %q", scriptCookies)
	}
	got := hs.sessions.issued()
	if len(got) != 1 || got[0].user != "alice" || got[0].method != "oidc" {
		t.Fatalf("IssueSession calls = %+v, want one for alice via oidc", got)
	}

	// An open-redirect attempt in the same browser stops at hearth.
	if err := chromedp.Do(ctx, chromedp.Navigate(hs.base+PathPrefix+"test/login?return=%2F%2Fidp.test%2Fevil")); err != nil {
		t.Fatalf("open-redirect attempt: %v", err)
	}
	body := run(t, ctx, chromedp.Text(chromedp.CSS(`body`)))
	finalURL = run(t, ctx, chromedp.Location())
	if !strings.Contains(body, "bad_return") || !strings.HasPrefix(finalURL, hs.base) {
		t.Fatalf("open-redirect attempt ended at %s with %q, want hearth's bad_return refusal", finalURL, body)
	}
}

// run runs one browser action that yields a value.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}
