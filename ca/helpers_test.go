package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/certificates/authority/provisioner"
	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// memAudit records events in memory and fails on demand.
type memAudit struct {
	mu     sync.Mutex
	events []audit.Event
	fail   bool
	// onRecord, if set, runs before each entry is recorded, outside the
	// lock: a test's way to act at the moment an operation audits.
	onRecord func(audit.Event)
}

func (m *memAudit) Record(_ context.Context, e audit.Event) error {
	m.mu.Lock()
	hook := m.onRecord
	m.mu.Unlock()
	if hook != nil {
		hook(e)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("disk full")
	}
	m.events = append(m.events, e)
	return nil
}

func (m *memAudit) setFail(v bool) {
	m.mu.Lock()
	m.fail = v
	m.mu.Unlock()
}

func (m *memAudit) named(name, outcome string) []audit.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []audit.Event
	for _, e := range m.events {
		if e.Name == name && (outcome == "" || e.Outcome == outcome) {
			out = append(out, e)
		}
	}
	return out
}

// testCA is a CA in a temp dir with its public handler on a TLS 1.3
// gateway-like listener and its smallstep API on a CA listener, both on
// 127.0.0.1.
type testCA struct {
	*CA
	dir     string
	db      *bbolt.DB // hearth.db, when the store is boltstore
	audit   *memAudit
	gateway *httptest.Server
	api     *httptest.Server
}

func newTestCA(t testing.TB, cfg Config) *testCA {
	t.Helper()
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{Name: "test", Hosts: []string{"hearth.test"}}); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(filepath.Join(dir, "hearth.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tc := startTestCA(t, dir, cfg, Options{Store: boltstore.New(db)})
	tc.db = db
	return tc
}

// startTestCA opens the CA initialised in dir with opts (a store, and
// maybe a CA database; the test's policy and audit log are added) and
// serves it on two loopback listeners.
func startTestCA(t testing.TB, dir string, cfg Config, opts Options) *testCA {
	t.Helper()
	pol, err := authz.New(authz.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ma := &memAudit{}
	opts.Policy, opts.Audit = pol, ma
	c, err := Open(dir, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tc := &testCA{CA: c, dir: dir, audit: ma}

	gw := httptest.NewUnstartedServer(c.PublicHandler())
	gw.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*c.ServerCertificate()},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    c.Roots(),
	}
	gw.StartTLS()
	t.Cleanup(gw.Close)
	tc.gateway = gw

	api := httptest.NewUnstartedServer(c.APIHandler())
	api.TLS = c.APITLSConfig()
	// httptest adds its own certificate when Certificates is empty, and
	// crypto/tls prefers it to GetCertificate for clients that send no SNI
	// (an IP address); serve the gateway certificate to every client.
	api.TLS.Certificates = []tls.Certificate{*c.ServerCertificate()}
	api.StartTLS()
	t.Cleanup(api.Close)
	tc.api = api
	return tc
}

// client returns an HTTPS client trusting only the test CA's root,
// presenting cert when not nil.
func (tc *testCA) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: tc.Roots(), ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrPEM makes a CSR for tmpl signed by key.
func csrPEM(t testing.TB, tmpl *x509.CertificateRequest, key crypto.Signer) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func (tc *testCA) deviceCSR(t testing.TB, name string, key crypto.Signer) string {
	u, _ := url.Parse(tc.DeviceID(name))
	return csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}, URIs: []*url.URL{u}}, key)
}

// post sends a JSON body and decodes the JSON answer.
func post(t testing.TB, hc *http.Client, u string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case []byte:
		rd = bytes.NewReader(b)
	default:
		bs, _ := json.Marshal(b)
		rd = bytes.NewReader(bs)
	}
	resp, err := hc.Post(u, "application/json", rd)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

// enroll posts token+csr to the gateway.
func (tc *testCA) enroll(t testing.TB, token, csr string) (int, map[string]any) {
	return post(t, tc.client(nil), tc.gateway.URL+EnrollPath, EnrollRequest{Token: token, CSR: csr})
}

func parseCertPEM(t testing.TB, s string) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode([]byte(s))
	if blk == nil {
		t.Fatalf("not PEM: %q", s)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// enrolled adds and enrolls a device and returns its TLS certificate.
func (tc *testCA) enrolled(t testing.TB, name string, caps ...string) (*tls.Certificate, *x509.Certificate) {
	t.Helper()
	tok, err := tc.AddDevice(context.Background(), name, caps, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	st, out := tc.enroll(t, tok.Token, tc.deviceCSR(t, name, key))
	if st != http.StatusCreated {
		t.Fatalf("enroll %s = %d %v", name, st, out)
	}
	leaf := parseCertPEM(t, out["certificate"].(string))
	inter := parseCertPEM(t, out["chain"].(string))
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw, inter.Raw}, PrivateKey: key, Leaf: leaf}, leaf
}

func provisionerSignContext(ctx context.Context) context.Context {
	return provisioner.NewContextWithMethod(ctx, provisioner.SignMethod)
}

// certsOf returns the certificates indexed for a device's current
// incarnation.
func (tc *testCA) certsOf(t testing.TB, name string) []certRecord {
	t.Helper()
	r, idx, err := tc.devices.load(context.Background(), name)
	if err != nil || r == nil {
		t.Fatalf("device %s: %v", name, err)
	}
	return idx.Certs
}
