package mtls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
)

// testCA is a CA minted inside the test (the tests do not depend on ca/).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

var serial int64 = 100

func (ca *testCA) issue(t testing.TB, cn string, eku []x509.ExtKeyUsage, ips []net.IP, uris []*url.URL) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
		IPAddresses:  ips,
		URIs:         uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func (ca *testCA) server(t testing.TB) tls.Certificate {
	return ca.issue(t, "hearth", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
}

func (ca *testCA) device(t testing.TB, name string) tls.Certificate {
	u, _ := url.Parse("spiffe://home.arpa/device/" + name)
	return ca.issue(t, name, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, []*url.URL{u})
}

// devices is a DeviceDirectory over a map; revoke takes effect at once.
type devices struct {
	mu      sync.Mutex
	caps    map[string][]authz.Capability
	lookups int
	fail    error
}

func (d *devices) LookupDevice(_ context.Context, c *x509.Certificate) (string, []authz.Capability, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups++
	if d.fail != nil {
		return "", nil, d.fail
	}
	for _, u := range c.URIs {
		name, ok := strings.CutPrefix(u.Path, "/device/")
		if !ok {
			continue
		}
		if caps, ok := d.caps[name]; ok {
			return name, caps, nil
		}
	}
	return "", nil, authz.ErrUnknownDevice
}

func (d *devices) set(name string, caps []authz.Capability) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.caps[name] = caps
}

func (d *devices) revoke(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.caps, name)
}

func (d *devices) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lookups
}

// tokens is a TokenAuthenticator over a map.
type tokens map[string]*authz.Principal

func (m tokens) AuthenticateToken(_ context.Context, tok string) (*authz.Principal, error) {
	if p, ok := m[tok]; ok {
		return p, nil
	}
	return nil, authz.ErrInvalidToken
}

// recorder keeps events in memory; fail makes Record fail.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
	fail   bool
}

func (r *recorder) Record(_ context.Context, e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("audit: disk full")
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) last() audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return audit.Event{}
	}
	return r.events[len(r.events)-1]
}

func (r *recorder) setFail(b bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = b
}

// seen is what the upstream received.
type seen struct {
	Method, Path, Escaped, Query string
	Header                       http.Header
	ProtoMajor                   int
}

type upstreamLog struct {
	mu   sync.Mutex
	reqs []seen
}

func (u *upstreamLog) add(r *http.Request) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reqs = append(u.reqs, seen{r.Method, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), r.ProtoMajor})
}

func (u *upstreamLog) all() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.reqs...)
}

func (u *upstreamLog) len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *upstreamLog) lastReq() seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		return seen{}
	}
	return u.reqs[len(u.reqs)-1]
}
