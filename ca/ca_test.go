package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

func TestInit(t *testing.T) {
	dir := t.TempDir()
	res, err := Init(dir, InitOptions{Name: "home", Hosts: []string{"hearth.home.arpa", "192.168.1.10", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	root := readCert(t, res.RootPEM)
	sum := sha256.Sum256(root.Raw)
	if res.Fingerprint != hex.EncodeToString(sum[:]) {
		t.Errorf("Fingerprint = %s, want SHA-256 of the root DER", res.Fingerprint)
	}
	if !root.IsCA || root.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Errorf("root: IsCA=%v key %T, want a P-256 CA", root.IsCA, root.PublicKey)
	}
	gw := readCert(t, filepath.Join(res.Dir, gatewayCertFile))
	wantDNS := []string{"hearth.home.arpa", "localhost"}
	if strings.Join(gw.DNSNames, ",") != strings.Join(wantDNS, ",") {
		t.Errorf("gateway DNS names = %v, want %v", gw.DNSNames, wantDNS)
	}
	var ips []string
	for _, ip := range gw.IPAddresses {
		ips = append(ips, ip.String())
	}
	if strings.Join(ips, ",") != "192.168.1.10,127.0.0.1,::1" {
		t.Errorf("gateway IPs = %v", ips)
	}
	if len(gw.ExtKeyUsage) != 1 || gw.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || gw.IsCA {
		t.Errorf("gateway EKU = %v IsCA=%v, want serverAuth only", gw.ExtKeyUsage, gw.IsCA)
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		switch {
		case d.IsDir() && p != dir && fi.Mode().Perm() != 0o700:
			t.Errorf("%s mode = %v, want 0700", p, fi.Mode().Perm())
		case strings.HasSuffix(p, ".key") || strings.HasSuffix(p, provisionerFile) || strings.HasSuffix(p, "/db"):
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode = %v, want 0600", p, fi.Mode().Perm())
			}
		}
		return nil
	})

	// A second Init refuses and changes nothing.
	before := digestTree(t, dir)
	if _, err := Init(dir, InitOptions{}); !errors.Is(err, ErrExists) {
		t.Errorf("second Init = %v, want ErrExists", err)
	}
	if after := digestTree(t, dir); after != before {
		t.Error("second Init changed the data dir")
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseCertPEM(t, string(b))
}

func digestTree(t *testing.T, dir string) string {
	h := sha256.New()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		h.Write([]byte(p))
		if !d.IsDir() {
			b, _ := os.ReadFile(p)
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

func TestEnrollCertificateShape(t *testing.T) {
	tc := newTestCA(t, Config{})
	tok, err := tc.AddDevice(context.Background(), "kitchen-pi", []string{"system:read"}, 0, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Fingerprint != tc.Fingerprint() || tok.URL == "" || !tok.ExpiresAt.After(time.Now()) {
		t.Errorf("token = %+v", tok)
	}
	key := newKey(t)
	start := time.Now()
	st, out := tc.enroll(t, tok.Token, tc.deviceCSR(t, "kitchen-pi", key))
	if st != http.StatusCreated {
		t.Fatalf("enroll = %d %v", st, out)
	}
	leaf := parseCertPEM(t, out["certificate"].(string))
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://hearth.home.arpa/device/kitchen-pi" {
		t.Errorf("URIs = %v, want the device's SPIFFE ID only", leaf.URIs)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("extra SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(leaf.UnknownExtKeyUsage) != 0 {
		t.Errorf("ExtKeyUsage = %v %v, want clientAuth only", leaf.ExtKeyUsage, leaf.UnknownExtKeyUsage)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want digitalSignature", leaf.KeyUsage)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("IsCA = %v (valid %v), want a non-CA", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if life := leaf.NotAfter.Sub(start); life > 24*time.Hour+time.Minute || life < 23*time.Hour {
		t.Errorf("lifetime from now = %v, want 24h", life)
	}
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		t.Error("the certificate is not for the CSR's key")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: tc.Roots(), Intermediates: tc.intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("Verify: %v", err)
	}
	name, caps, err := tc.LookupDevice(context.Background(), leaf)
	if err != nil || name != "kitchen-pi" || joinCaps(caps) != "conversations:read,status" {
		t.Errorf("LookupDevice = %q %v %v, want kitchen-pi [conversations:read status]", name, caps, err)
	}
	if ev := tc.audit.named(audit.EventDeviceEnroll, audit.OutcomeSuccess); len(ev) != 1 || ev[0].Meta["serial"] != leaf.SerialNumber.String() || ev[0].Principal != "device:kitchen-pi" {
		t.Errorf("audit device.enroll = %+v", ev)
	}
	ds, _ := tc.ListDevices(context.Background())
	if len(ds) != 1 || !ds[0].Enrolled || ds[0].Serial != leaf.SerialNumber.String() {
		t.Errorf("ListDevices = %+v", ds)
	}
	// An enrolled device is not replaced by a new add.
	if _, err := tc.AddDevice(context.Background(), "kitchen-pi", []string{"status"}, 0, 0); !errors.Is(err, ErrDeviceExists) {
		t.Errorf("AddDevice over an enrolled device = %v, want ErrDeviceExists", err)
	}
}

func TestAddDeviceRefusals(t *testing.T) {
	tc := newTestCA(t, Config{})
	for _, tt := range []struct {
		name, dev string
		caps      []string
		ttl, life time.Duration
	}{
		{"uppercase", "Kitchen", []string{"status"}, 0, 0},
		{"dot", "a.b", []string{"status"}, 0, 0},
		{"slash", "a/b", []string{"status"}, 0, 0},
		{"leading dash", "-a", []string{"status"}, 0, 0},
		{"too long", strings.Repeat("a", 64), []string{"status"}, 0, 0},
		{"empty", "", []string{"status"}, 0, 0},
		{"unknown capability", "pi", []string{"status", "rocket:launch"}, 0, 0},
		{"no capability", "pi", nil, 0, 0},
		{"lifetime over max", "pi", []string{"status"}, 0, 2161 * time.Hour},
		{"lifetime too short", "pi", []string{"status"}, 0, time.Minute},
		{"ttl too long", "pi", []string{"status"}, 25 * time.Hour, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tc.AddDevice(context.Background(), tt.dev, tt.caps, tt.ttl, tt.life); !errors.Is(err, ErrBadRequest) {
				t.Errorf("AddDevice(%q, %v, %v, %v) = %v, want ErrBadRequest", tt.dev, tt.caps, tt.ttl, tt.life, err)
			}
		})
	}
	if ds, _ := tc.ListDevices(context.Background()); len(ds) != 0 {
		t.Errorf("refused adds left devices: %+v", ds)
	}
	if ev := tc.audit.named(audit.EventDeviceAdd, ""); len(ev) != 0 {
		t.Errorf("refused adds were audited as adds: %+v", ev)
	}
}

// TestTokenReuseConcurrent: 8 concurrent enrollments with one token give
// exactly one certificate (smallstep's UseToken is a compare-and-swap).
func TestTokenReuseConcurrent(t *testing.T) {
	tc := newTestCA(t, Config{})
	tok, err := tc.AddDevice(context.Background(), "laptop", []string{"system:read"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	csrs := make([]string, n)
	for i := range csrs {
		csrs[i] = tc.deviceCSR(t, "laptop", newKey(t))
	}
	var wg sync.WaitGroup
	codes := make([]int, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			codes[i], _ = tc.enroll(t, tok.Token, csrs[i])
		}(i)
	}
	close(start)
	wg.Wait()
	var ok, unauth int
	for _, c := range codes {
		switch c {
		case http.StatusCreated:
			ok++
		case http.StatusUnauthorized:
			unauth++
		}
	}
	if ok != 1 || unauth != n-1 {
		t.Fatalf("statuses = %v, want exactly one 201 and %d 401", codes, n-1)
	}
	if certs := tc.certsOf(t, "laptop"); len(certs) != 1 {
		t.Errorf("device record holds %d certificates, want 1", len(certs))
	}
	if got := len(tc.audit.named(audit.EventDeviceEnroll, audit.OutcomeSuccess)); got != 1 {
		t.Errorf("%d successful enroll entries, want 1", got)
	}
	if got := len(tc.audit.named(audit.EventDeviceEnroll, audit.OutcomeFailure)); got != n-1 {
		t.Errorf("%d refused enroll entries, want %d", got, n-1)
	}
}

func TestEnrollBadTokens(t *testing.T) {
	tc := newTestCA(t, Config{})
	other := newTestCA(t, Config{})
	ctx := context.Background()

	// A token for the same name from another hearth.
	foreign, err := other.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// An expired token: minted an hour ago with a 15-minute TTL.
	tc.now = func() time.Time { return time.Now().Add(-time.Hour) }
	expired, err := tc.AddDevice(ctx, "old", []string{"status"}, 15*time.Minute, 0)
	tc.now = time.Now
	if err != nil {
		t.Fatal(err)
	}
	// A replaced token: the second add of a device that never enrolled.
	first, err := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	// A token of a revoked device.
	rv, err := tc.AddDevice(ctx, "gone", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.RevokeDevice(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	// A token whose signature was tampered with.
	good, err := tc.AddDevice(ctx, "tv", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good.Token, ".")
	sig := []byte(parts[2])
	if sig[5] == 'A' {
		sig[5] = 'B'
	} else {
		sig[5] = 'A'
	}
	tampered := parts[0] + "." + parts[1] + "." + string(sig)

	for _, tt := range []struct {
		name, token, device, want string
	}{
		{"malformed", "not-a-token", "pi", "not a signed JWT"},
		{"empty", "", "pi", "missing"},
		{"foreign CA", foreign.Token, "pi", "not issued by this hearth"},
		{"expired", expired.Token, "old", "expired"},
		{"replaced", first.Token, "pi", "already used or replaced"},
		{"revoked device", rv.Token, "gone", "already used or replaced"},
		{"tampered", tampered, "tv", "not issued by this hearth"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(tc.audit.named(audit.EventDeviceEnroll, audit.OutcomeFailure))
			st, out := tc.enroll(t, tt.token, tc.deviceCSR(t, tt.device, newKey(t)))
			if st != http.StatusUnauthorized || out["code"] != "bad_token" || !strings.Contains(out["error"].(string), tt.want) {
				t.Errorf("enroll = %d %v, want 401 bad_token mentioning %q", st, out, tt.want)
			}
			if after := len(tc.audit.named(audit.EventDeviceEnroll, audit.OutcomeFailure)); after != before+1 {
				t.Errorf("refusal not audited (%d -> %d entries)", before, after)
			}
		})
	}
	// Nothing was issued to anyone.
	recs, _ := tc.devices.list(context.Background())
	for _, e := range recs {
		if certs := tc.certsOf(t, e.rec.Name); len(certs) != 0 {
			t.Errorf("device %s got certificates %v", e.rec.Name, certs)
		}
	}
	// The token of one device cannot enroll another: its CSR may only
	// name the token's device.
	st, out := tc.enroll(t, good.Token, tc.deviceCSR(t, "pi", newKey(t)))
	if st != http.StatusBadRequest || out["code"] != "bad_csr" {
		t.Errorf("tv's token with pi's CSR = %d %v, want 400 bad_csr", st, out)
	}
}

func TestEnrollBadCSRs(t *testing.T) {
	tc := newTestCA(t, Config{})
	tc.thr = newFailThrottle(100) // more refusals here than one address's budget (TestEnrollThrottle tests that)
	ctx := context.Background()
	tok, err := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := url.Parse(tc.DeviceID("pi"))
	other, _ := url.Parse("spiffe://hearth.home.arpa/device/other")
	k := newKey(t)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	good := tc.deviceCSR(t, "pi", k)
	badSig := func() string {
		blk, _ := pem.Decode([]byte(good))
		der := append([]byte(nil), blk.Bytes...)
		der[len(der)-5] ^= 0x01 // inside the signature
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}()
	caExt, _ := asn1.Marshal(struct {
		IsCA bool
	}{true})

	for _, tt := range []struct {
		name, csr, want string
	}{
		{"bad signature", badSig, "signature"},
		{"extra DNS", csrPEM(t, &x509.CertificateRequest{URIs: []*url.URL{id}, DNSNames: []string{"bank.example"}}, k), "DNS:bank.example"},
		{"extra IP", csrPEM(t, &x509.CertificateRequest{URIs: []*url.URL{id}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}, k), "IP:10.0.0.1"},
		{"extra email", csrPEM(t, &x509.CertificateRequest{URIs: []*url.URL{id}, EmailAddresses: []string{"a@b.c"}}, k), "email:a@b.c"},
		{"other URI", csrPEM(t, &x509.CertificateRequest{URIs: []*url.URL{id, other}}, k), "URI:spiffe://hearth.home.arpa/device/other"},
		{"other device only", csrPEM(t, &x509.CertificateRequest{URIs: []*url.URL{other}}, k), "beyond"},
		{"other common name", csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "admin"}}, k), "common name"},
		{"organization", csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "pi", Organization: []string{"x"}}}, k), "subject"},
		{"weak RSA", csrPEM(t, &x509.CertificateRequest{URIs: []*url.URL{id}}, rsa1024), "1024 bits"},
		{"P-224", csrPEM(t, &x509.CertificateRequest{URIs: []*url.URL{id}}, p224), "P-224"},
		{"P-521", csrPEM(t, &x509.CertificateRequest{URIs: []*url.URL{id}}, p521), "P-521"},
		{"asks for CA", csrPEM(t, &x509.CertificateRequest{URIs: []*url.URL{id}, ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Critical: true, Value: caExt}}}, k), "CA"},
		{"not PEM", "hello", "not PEM"},
		{"empty", "", "no csr"},
		{"certificate block", strings.Replace(good, "CERTIFICATE REQUEST", "CERTIFICATE", 2), "CERTIFICATE REQUEST"},
		{"two blocks", good + good, "after the PEM block"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st, out := tc.enroll(t, tok.Token, tt.csr)
			if st != http.StatusBadRequest || out["code"] != "bad_csr" || !strings.Contains(out["error"].(string), tt.want) {
				t.Errorf("enroll = %d %v, want 400 bad_csr mentioning %q", st, out, tt.want)
			}
		})
	}
	if certs := tc.certsOf(t, "pi"); len(certs) != 0 {
		t.Errorf("after refused CSRs: certs %v; want none issued", certs)
	}
	if got := len(tc.audit.named(audit.EventDeviceEnroll, audit.OutcomeFailure)); got != 16 {
		t.Errorf("%d refusals audited, want 16", got)
	}
	// The token was not consumed by the refusals; Ed25519 and RSA-2048 are
	// accepted keys.
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	if st, out := tc.enroll(t, tok.Token, tc.deviceCSR(t, "pi", edKey)); st != http.StatusCreated {
		t.Errorf("enroll with an Ed25519 key = %d %v, want 201", st, out)
	}
}

func TestEnrollBodyLimits(t *testing.T) {
	tc := newTestCA(t, Config{})
	big := `{"token": "` + strings.Repeat("a", 70<<10) + `", "csr": ""}`
	if st, out := post(t, tc.client(nil), tc.gateway.URL+EnrollPath, []byte(big)); st != http.StatusRequestEntityTooLarge || out["code"] != "too_large" {
		t.Errorf("70 KiB body = %d %v, want 413 too_large", st, out)
	}
	for _, body := range []string{`{`, `{"token":"a","csr":"b","extra":1}`, `{"token":"a","csr":"b"} {}`, `[]`} {
		if st, out := post(t, tc.client(nil), tc.gateway.URL+EnrollPath, []byte(body)); st != http.StatusBadRequest {
			t.Errorf("body %q = %d %v, want 400", body, st, out)
		}
	}
	resp, err := tc.client(nil).Get(tc.gateway.URL + EnrollPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET enroll = %d, want 405", resp.StatusCode)
	}
}

func TestRenewAndRevoke(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	cert, leaf := tc.enrolled(t, "laptop", "system:read")

	// Renew over mTLS with the same key, then with a new key.
	st, out := post(t, tc.client(cert), tc.gateway.URL+RenewPath, []byte(""))
	if st != http.StatusCreated {
		t.Fatalf("renew = %d %v", st, out)
	}
	renewed := parseCertPEM(t, out["certificate"].(string))
	if renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 || renewed.URIs[0].String() != leaf.URIs[0].String() {
		t.Errorf("renewed serial %v URIs %v", renewed.SerialNumber, renewed.URIs)
	}
	if !renewed.PublicKey.(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Error("renewal without a CSR changed the key")
	}
	k2 := newKey(t)
	st, out = post(t, tc.client(cert), tc.gateway.URL+RenewPath, RenewRequest{CSR: tc.deviceCSR(t, "laptop", k2)})
	if st != http.StatusCreated {
		t.Fatalf("rekey = %d %v", st, out)
	}
	rekeyed := parseCertPEM(t, out["certificate"].(string))
	if !rekeyed.PublicKey.(*ecdsa.PublicKey).Equal(&k2.PublicKey) {
		t.Error("renewal with a CSR did not use its key")
	}
	// A renewal CSR may not add names either.
	st, _ = post(t, tc.client(cert), tc.gateway.URL+RenewPath, RenewRequest{CSR: csrPEM(t, &x509.CertificateRequest{DNSNames: []string{"x.example"}}, k2)})
	if st != http.StatusBadRequest {
		t.Errorf("renew with an extra name = %d, want 400", st)
	}
	for _, c := range []*x509.Certificate{leaf, renewed, rekeyed} {
		if _, _, err := tc.LookupDevice(ctx, c); err != nil {
			t.Errorf("LookupDevice(serial %v) = %v before revocation", c.SerialNumber, err)
		}
	}
	if n := len(tc.audit.named(audit.EventCertRenew, audit.OutcomeSuccess)); n != 2 {
		t.Errorf("%d cert.renew successes audited, want 2", n)
	}
	// Without a client certificate: 401.
	if st, _ := post(t, tc.client(nil), tc.gateway.URL+RenewPath, []byte("")); st != http.StatusUnauthorized {
		t.Errorf("renew without mTLS = %d, want 401", st)
	}

	d, err := tc.RevokeDevice(ctx, "laptop")
	if err != nil || !d.Revoked {
		t.Fatalf("RevokeDevice = %+v %v", d, err)
	}
	for _, c := range []*x509.Certificate{leaf, renewed, rekeyed} {
		if _, _, err := tc.LookupDevice(ctx, c); !errors.Is(err, ErrUnknownDevice) {
			t.Errorf("LookupDevice after revocation = %v, want ErrUnknownDevice", err)
		}
		if ok, err := tc.sdb.IsRevoked(c.SerialNumber.String()); !ok || err != nil {
			t.Errorf("smallstep IsRevoked(%v) = %v %v, want true", c.SerialNumber, ok, err)
		}
	}
	if st, out := post(t, tc.client(cert), tc.gateway.URL+RenewPath, []byte("")); st != http.StatusUnauthorized {
		t.Errorf("renew after revocation = %d %v, want 401", st, out)
	}
	// smallstep's own renewal (on the CA listener) refuses it as well.
	if st, out := post(t, tc.client(cert), tc.api.URL+"/1.0/renew", []byte("")); st < 400 {
		t.Errorf("smallstep /1.0/renew after revocation = %d %v, want a refusal", st, out)
	}
	if ev := tc.audit.named(audit.EventCertRevoke, audit.OutcomeSuccess); len(ev) != 1 || ev[0].Resource != "device:laptop" {
		t.Errorf("cert.revoke entries = %+v", ev)
	}
	// A revoked device may be added again; its old certificates stay dead.
	if _, err := tc.AddDevice(ctx, "laptop", []string{"status"}, 0, 0); err != nil {
		t.Fatalf("re-adding a revoked device: %v", err)
	}
	if _, _, err := tc.LookupDevice(ctx, leaf); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("old certificate after re-add = %v, want ErrUnknownDevice", err)
	}
}

// TestForeignCertificate: a certificate from another hearth with the same
// device name is refused by LookupDevice and by renewal.
func TestForeignCertificate(t *testing.T) {
	tc := newTestCA(t, Config{})
	other := newTestCA(t, Config{})
	tc.enrolled(t, "laptop", "status")
	fcert, fleaf := other.enrolled(t, "laptop", "status")
	if _, _, err := tc.LookupDevice(context.Background(), fleaf); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("LookupDevice(foreign) = %v, want ErrUnknownDevice", err)
	}
	// The TLS layer refuses it outright (ClientCAs is hearth's root only);
	// the handler would refuse it too.
	if _, err := tc.verifyPeer([]*x509.Certificate{fleaf}); err == nil {
		t.Error("verifyPeer accepted a foreign certificate")
	}
	hc := tc.client(fcert)
	if resp, err := hc.Post(tc.gateway.URL+RenewPath, "application/json", nil); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("renew with a foreign certificate = %d, want 401 or a handshake failure", resp.StatusCode)
		}
	}
	// A certificate with a device ID of this trust domain, signed by this
	// CA's intermediate but never recorded, is refused too.
	forged := *fleaf
	forged.SerialNumber = fleaf.SerialNumber
	if _, _, err := tc.LookupDevice(context.Background(), &forged); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("LookupDevice(unrecorded) = %v", err)
	}
}

// TestAuditFailure: when the audit entry cannot be written, nothing is
// issued (503) and nothing is half-written.
func TestAuditFailure(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	tok, err := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	tc.audit.setFail(true)
	if _, err := tc.AddDevice(ctx, "tv", []string{"status"}, 0, 0); !errors.Is(err, ErrAuditUnavailable) {
		t.Errorf("AddDevice with a failing audit log = %v, want ErrAuditUnavailable", err)
	}
	if r, _ := tc.devices.get(ctx, "tv"); r != nil {
		t.Errorf("AddDevice wrote %+v although its audit entry failed", r)
	}
	st, out := tc.enroll(t, tok.Token, tc.deviceCSR(t, "pi", newKey(t)))
	if st != http.StatusServiceUnavailable || out["code"] != "unavailable" {
		t.Fatalf("enroll with a failing audit log = %d %v, want 503", st, out)
	}
	certs := tc.certsOf(t, "pi")
	if len(certs) != 1 {
		t.Errorf("%d certificates indexed, want the one signed before the audit failed", len(certs))
	}
	for _, c := range certs {
		if !c.Revoked {
			t.Errorf("certificate %s is live although it was never handed out", c.Serial)
		}
		if ok, _ := tc.sdb.IsRevoked(c.Serial); !ok {
			t.Errorf("certificate %s is not revoked in smallstep's database", c.Serial)
		}
	}
	if _, err := tc.RevokeDevice(ctx, "pi"); !errors.Is(err, ErrAuditUnavailable) {
		t.Errorf("RevokeDevice with a failing audit log = %v", err)
	}
	if r, _ := tc.devices.get(ctx, "pi"); r.Revoked {
		t.Error("RevokeDevice revoked although its audit entry failed")
	}
	// Refusals fail closed too.
	if st, _ := tc.enroll(t, "garbage", "x"); st != http.StatusServiceUnavailable {
		t.Errorf("refusal with a failing audit log = %d, want 503", st)
	}
}

func TestAdminHandler(t *testing.T) {
	tc := newTestCA(t, Config{})
	h := tc.AdminHandler()
	srv := &http.Server{Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + ln.Addr().String() + AdminDevicesPath
	hc := &http.Client{}

	st, out := post(t, hc, base, AddDeviceRequest{Name: "pi", Caps: []string{"system:read"}, TTL: "10m", Lifetime: "48h"})
	if st != http.StatusCreated || out["token"] == "" || out["fingerprint"] != tc.Fingerprint() || out["url"] == "" || out["expires_at"] == "" {
		t.Fatalf("add = %d %v", st, out)
	}
	for _, tt := range []struct {
		name string
		body any
		want int
	}{
		{"bad name", AddDeviceRequest{Name: "Pi!", Caps: []string{"status"}}, 400},
		{"unknown cap", AddDeviceRequest{Name: "pi2", Caps: []string{"nope"}}, 400},
		{"bad ttl", AddDeviceRequest{Name: "pi2", Caps: []string{"status"}, TTL: "soon"}, 400},
		{"unknown field", []byte(`{"name":"pi2","caps":["status"],"admin":true}`), 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if st, out := post(t, hc, base, tt.body); st != tt.want {
				t.Errorf("add = %d %v, want %d", st, out, tt.want)
			}
		})
	}
	resp, err := hc.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("list = %d", resp.StatusCode)
	}
	if st, out := post(t, hc, base+"/pi/revoke", []byte("")); st != 200 || out["device"].(map[string]any)["revoked"] != true {
		t.Errorf("revoke = %d %v", st, out)
	}
	if st, _ := post(t, hc, base+"/nobody/revoke", []byte("")); st != 404 {
		t.Errorf("revoke unknown = %d, want 404", st)
	}
	tc.audit.setFail(true)
	if st, out := post(t, hc, base, AddDeviceRequest{Name: "pi3", Caps: []string{"status"}}); st != 503 {
		t.Errorf("add with a failing audit = %d %v, want 503", st, out)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"custom", Config{Listen: "127.0.0.1:9999", TrustDomain: "home.example", DeviceLifetime: "24h", MaxDeviceLifetime: "48h", EnrollTokenTTL: "5m"}, true},
		{"bad listen", Config{Listen: "9443"}, false},
		{"bad trust domain", Config{TrustDomain: "Home Example"}, false},
		{"lifetime over max", Config{DeviceLifetime: "100h", MaxDeviceLifetime: "50h"}, false},
		{"negative", Config{DeviceLifetime: "-1h"}, false},
		{"not a duration", Config{EnrollTokenTTL: "soon"}, false},
		{"ttl too long", Config{EnrollTokenTTL: "48h"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestLookupDeviceRefusals(t *testing.T) {
	tc := newTestCA(t, Config{})
	_, leaf := tc.enrolled(t, "pi", "status")
	ctx := context.Background()
	mod := func(f func(c *x509.Certificate)) *x509.Certificate {
		c := *leaf
		f(&c)
		return &c
	}
	u := func(s string) []*url.URL { x, _ := url.Parse(s); return []*url.URL{x} }
	for _, tt := range []struct {
		name string
		crt  *x509.Certificate
	}{
		{"nil", nil},
		{"no URI", mod(func(c *x509.Certificate) { c.URIs = nil })},
		{"other trust domain", mod(func(c *x509.Certificate) { c.URIs = u("spiffe://evil.example/device/pi") })},
		{"not a device path", mod(func(c *x509.Certificate) { c.URIs = u("spiffe://hearth.home.arpa/user/pi") })},
		{"extra DNS", mod(func(c *x509.Certificate) { c.DNSNames = []string{"pi"} })},
		{"other serial", mod(func(c *x509.Certificate) { c.SerialNumber = c.SerialNumber.Add(c.SerialNumber, c.SerialNumber) })},
		{"other bytes", mod(func(c *x509.Certificate) { c.Raw = append([]byte{0}, c.Raw...) })},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := tc.LookupDevice(ctx, tt.crt); !errors.Is(err, ErrUnknownDevice) {
				t.Errorf("LookupDevice = %v, want ErrUnknownDevice", err)
			}
		})
	}
	// Expired by the injected clock.
	tc.now = func() time.Time { return leaf.NotAfter.Add(time.Second) }
	defer func() { tc.now = time.Now }()
	if _, _, err := tc.LookupDevice(ctx, leaf); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("LookupDevice(expired) = %v", err)
	}
}

func TestDeviceCapabilities(t *testing.T) {
	tc := newTestCA(t, Config{})
	if _, err := tc.AddDevice(context.Background(), "pi", []string{"system:admin"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	caps, err := tc.DeviceCapabilities(context.Background(), "pi")
	if err != nil || !(&authz.Principal{Caps: caps}).Has(authz.CapHearthAdmin) {
		t.Errorf("DeviceCapabilities = %v %v, want system:admin expanded", caps, err)
	}
	if _, err := tc.DeviceCapabilities(context.Background(), "nobody"); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("unknown device = %v", err)
	}
}

func TestRootsEndpointAndPinning(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	root, err := FetchPinnedRoot(ctx, tc.gateway.URL, tc.Fingerprint(), nil)
	if err != nil || Fingerprint(root) != tc.Fingerprint() {
		t.Fatalf("FetchPinnedRoot(gateway) = %v", err)
	}
	if _, err := FetchPinnedRoot(ctx, tc.api.URL, tc.Fingerprint(), nil); err != nil {
		t.Errorf("FetchPinnedRoot(CA listener) = %v", err)
	}
	other := newTestCA(t, Config{})
	if _, err := FetchPinnedRoot(ctx, tc.gateway.URL, other.Fingerprint(), nil); !errors.Is(err, ErrFingerprint) {
		t.Errorf("wrong fingerprint = %v, want ErrFingerprint", err)
	}
	if _, err := FetchPinnedRoot(ctx, tc.gateway.URL, "abc", nil); err == nil {
		t.Error("malformed fingerprint accepted")
	}
	// A server whose certificate is not from the pinned root (it serves
	// the right root but presents another CA's certificate).
	mitm := newTestCA(t, Config{})
	fake := http.NewServeMux()
	fake.HandleFunc("/.hearth/v1/roots.pem", func(w http.ResponseWriter, r *http.Request) { w.Write(tc.RootPEM()) })
	srv := newTLSServer(t, fake, mitm.ServerCertificate())
	if _, err := FetchPinnedRoot(ctx, srv, tc.Fingerprint(), nil); err == nil || !strings.Contains(err.Error(), "pinned root") {
		t.Errorf("MITM server = %v, want a chain verification error", err)
	}
}

func newTLSServer(t *testing.T, h http.Handler, cert *tls.Certificate) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{*cert}}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String()
}

func TestClientEnrollAndRenew(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	tok, err := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "device")
	res, err := Enroll(ctx, EnrollOptions{CAURL: tc.gateway.URL, Fingerprint: tok.Fingerprint, Token: tok.Token, OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(res.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v, want 0600", fi, err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("out dir: %v %v, want 0700", fi, err)
	}
	crt, err := ReadDeviceCert(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tc.LookupDevice(ctx, crt); err != nil {
		t.Errorf("LookupDevice(enrolled) = %v", err)
	}
	// A second use of the token fails.
	if _, err := Enroll(ctx, EnrollOptions{CAURL: tc.gateway.URL, Fingerprint: tok.Fingerprint, Token: tok.Token, OutDir: t.TempDir()}); err == nil {
		t.Error("second Enroll with the same token succeeded")
	} else if ae, ok := errAs[*APIError](err); !ok || ae.Status != 401 {
		t.Errorf("second Enroll = %v, want a 401 APIError", err)
	}
	r2, err := Renew(ctx, RenewOptions{CAURL: tc.gateway.URL, Dir: out})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Serial == res.Serial {
		t.Error("Renew kept the serial")
	}
	crt2, _ := ReadDeviceCert(out)
	if crt2.SerialNumber.String() != r2.Serial {
		t.Error("Renew did not replace device.crt")
	}
	// Enrolling against the CA listener works too.
	tok2, _ := tc.AddDevice(ctx, "tv", []string{"status"}, 0, 0)
	if _, err := Enroll(ctx, EnrollOptions{CAURL: tc.api.URL, Fingerprint: tok2.Fingerprint, Token: tok2.Token, OutDir: t.TempDir()}); err != nil {
		t.Errorf("Enroll via the CA listener: %v", err)
	}
	if _, err := Enroll(ctx, EnrollOptions{CAURL: "http://" + strings.TrimPrefix(tc.gateway.URL, "https://"), Fingerprint: tok.Fingerprint, Token: "x", OutDir: t.TempDir()}); err == nil {
		t.Error("Enroll over plain http accepted")
	}
}

// TestUseTokenCompareAndSwap checks the property single use rests on:
// smallstep's Authorize consumes a token with one compare-and-swap in the
// CA database, so of 8 concurrent uses exactly one wins, even before
// hearth's own checks run.
func TestUseTokenCompareAndSwap(t *testing.T) {
	tc := newTestCA(t, Config{})
	tok, err := tc.AddDevice(context.Background(), "pi", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := provisionerSignContext(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	start := make(chan struct{})
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := tc.auth.Authorize(ctx, tok.Token); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !strings.Contains(err.Error(), "already used") {
				t.Errorf("Authorize = %v, want a reuse refusal", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d of 8 concurrent Authorize calls won, want 1", wins)
	}
}

// TestHearthNamesNotIssuable: the authority's policy refuses hearth's own
// names to every provisioner (ACME included), and ACME certificates are
// server-only.
func TestHearthNamesNotIssuable(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	for _, n := range []string{"hearth.test", "localhost", "127.0.0.1", "::1"} {
		if err := tc.auth.AreSANsAllowed(ctx, []string{n}); err == nil {
			t.Errorf("AreSANsAllowed(%s) = nil, want a refusal", n)
		}
	}
	if err := tc.auth.AreSANsAllowed(ctx, []string{"printer.home.arpa"}); err != nil {
		t.Errorf("AreSANsAllowed(printer.home.arpa) = %v", err)
	}
	if !strings.Contains(acmeTemplate, `"extKeyUsage": ["serverAuth"]`) {
		t.Error("the ACME template grants more than serverAuth")
	}
}

func TestGatewayCertificateRenewedOnOpen(t *testing.T) {
	tc := newTestCA(t, Config{})
	old := tc.ServerCertificate().Leaf
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "other.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pol, _ := authz.New(authz.Config{})
	tc.Close() // release the CA database
	at := func(now time.Time) *x509.Certificate {
		c, err := Open(tc.dir, Config{}, Options{Store: boltstore.New(db), Policy: pol, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ServerCertificate().Leaf
	}
	if got := at(old.NotBefore.Add(24 * time.Hour)); got.SerialNumber.Cmp(old.SerialNumber) != 0 {
		t.Error("a fresh gateway certificate was replaced")
	}
	late := old.NotAfter.Add(-30 * 24 * time.Hour)
	got := at(late)
	if got.SerialNumber.Cmp(old.SerialNumber) == 0 || !got.NotAfter.After(old.NotAfter) {
		t.Fatalf("gateway certificate at 11 months: serial %v until %v, want a new one", got.SerialNumber, got.NotAfter)
	}
	if strings.Join(got.DNSNames, ",") != strings.Join(old.DNSNames, ",") || len(got.IPAddresses) != len(old.IPAddresses) {
		t.Errorf("renewed names %v %v, want %v %v", got.DNSNames, got.IPAddresses, old.DNSNames, old.IPAddresses)
	}
	if fi, err := os.Stat(filepath.Join(tc.dir, "ca", gatewayKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("renewed key file: %v %v", fi, err)
	}
}

// TestStepAPIRoutes checks the smallstep API is mounted as smallstep's own
// CA mounts it: health, roots, root by fingerprint, provisioners, and the
// ACME directory.
func TestStepAPIRoutes(t *testing.T) {
	tc := newTestCA(t, Config{})
	hc := tc.client(nil)
	for _, tt := range []struct{ path, want string }{
		{"/health", `"status":"ok"`},
		{"/1.0/health", `"status":"ok"`},
		{"/roots", `"crts"`},
		{"/roots.pem", "BEGIN CERTIFICATE"},
		{"/root/" + tc.Fingerprint(), `"ca"`},
		{"/provisioners", `"name":"hearth"`},
		{"/acme/acme/directory", `"newNonce"`},
		{"/.hearth/v1/roots.pem", "BEGIN CERTIFICATE"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := hc.Get(tc.api.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// smallstep answers /roots with 201, as it always has.
			if resp.StatusCode/100 != 2 || !strings.Contains(string(b), tt.want) {
				t.Errorf("GET %s = %d %.200s, want 2xx containing %s", tt.path, resp.StatusCode, b, tt.want)
			}
		})
	}
	// The CA listener speaks TLS 1.2 (for older ACME clients) and 1.3.
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(tc.api.URL, "https://"), &tls.Config{RootCAs: tc.Roots(), MinVersion: v, MaxVersion: v})
		if err != nil {
			t.Errorf("TLS version %x: %v", v, err)
			continue
		}
		conn.Close()
	}
	if _, err := tls.Dial("tcp", strings.TrimPrefix(tc.api.URL, "https://"), &tls.Config{RootCAs: tc.Roots(), MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("the CA listener accepted TLS 1.1")
	}
}

// TestDeviceLifetimeBounds: the shortest and the longest lifetime a device
// may have both enroll, and the certificate lives exactly that long.
func TestDeviceLifetimeBounds(t *testing.T) {
	tc := newTestCA(t, Config{})
	for _, life := range []time.Duration{MinDeviceLifetime, DefaultMaxDeviceLifetime} {
		t.Run(life.String(), func(t *testing.T) {
			name := fmt.Sprintf("dev-%d", int(life.Minutes()))
			tok, err := tc.AddDevice(context.Background(), name, []string{"status"}, 0, life)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			st, out := tc.enroll(t, tok.Token, tc.deviceCSR(t, name, newKey(t)))
			if st != http.StatusCreated {
				t.Fatalf("enroll = %d %v", st, out)
			}
			leaf := parseCertPEM(t, out["certificate"].(string))
			if got := leaf.NotAfter.Sub(start); got > life+time.Second || got < life-5*time.Second {
				t.Errorf("lifetime = %v, want %v", got, life)
			}
		})
	}
}

// TestStepSignAudit: smallstep's /1.0/sign with a hearth token is audited
// before the answer; a token that is not the device's current one is
// refused before smallstep consumes anything; and with a failing audit log
// the signed certificate is revoked and the answer is 503.
func TestStepSignAudit(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	hc := tc.client(nil)
	sign := func(tok, csr string) (int, map[string]any) {
		return post(t, hc, tc.api.URL+"/1.0/sign", map[string]string{"ott": tok, "csr": csr})
	}
	old, _ := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	cur, _ := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	if st, out := sign(old.Token, tc.deviceCSR(t, "pi", newKey(t))); st != http.StatusUnauthorized {
		t.Errorf("/1.0/sign with a replaced token = %d %v, want 401", st, out)
	}
	// A CSR with names beyond the device's is refused on this path too,
	// before smallstep consumes the token.
	id, _ := url.Parse(tc.DeviceID("pi"))
	extra := csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "pi"}, URIs: []*url.URL{id}, DNSNames: []string{"bank.example"}}, newKey(t))
	if st, out := sign(cur.Token, extra); st != http.StatusBadRequest || !strings.Contains(fmt.Sprint(out["error"]), "DNS:bank.example") {
		t.Errorf("/1.0/sign with an extra DNS name = %d %v, want 400 naming it", st, out)
	}
	if st, out := sign(cur.Token, tc.deviceCSR(t, "pi", newKey(t))); st != http.StatusCreated {
		t.Fatalf("/1.0/sign = %d %v", st, out)
	}
	if ev := tc.audit.named(audit.EventCertIssue, ""); len(ev) != 3 || ev[0].Outcome != audit.OutcomeFailure || ev[1].Outcome != audit.OutcomeFailure || ev[2].Outcome != audit.OutcomeSuccess || ev[2].Principal != "device:pi" {
		t.Errorf("cert.issue entries = %+v, want two failures then a success for device:pi", ev)
	}

	tv, _ := tc.AddDevice(ctx, "tv", []string{"status"}, 0, 0)
	tc.audit.setFail(true)
	if st, out := sign(tv.Token, tc.deviceCSR(t, "tv", newKey(t))); st != http.StatusServiceUnavailable {
		t.Fatalf("/1.0/sign with a failing audit log = %d %v, want 503", st, out)
	}
	certs := tc.certsOf(t, "tv")
	if len(certs) != 1 || !certs[0].Revoked {
		t.Errorf("tv's certificates after the failed audit = %+v, want one, revoked", certs)
	}
	if ok, _ := tc.sdb.IsRevoked(certs[0].Serial); !ok {
		t.Error("the unissued certificate is not revoked in smallstep's database")
	}
}
