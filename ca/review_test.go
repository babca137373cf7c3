package ca

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/hearth-home/hearth/audit"
)

// TestStepSignBodyParsedAsSmallstepParsesIt: hearth's checks in front of
// smallstep's /1.0/sign must see exactly the request smallstep will act
// on. smallstep decodes the first JSON value of the body and ignores what
// follows; a body that hearth could not decode (trailing bytes, a second
// object) must therefore be refused, not waved through unchecked. Each
// case carries a token that was replaced by a newer one (the owner
// re-issued it because the first leaked), which hearth alone refuses.
func TestStepSignBodyParsedAsSmallstepParsesIt(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	hc := tc.client(nil)
	old, _ := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	if _, err := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	obj, _ := json.Marshal(map[string]string{"ott": old.Token, "csr": tc.deviceCSR(t, "pi", newKey(t))})
	cases := []struct {
		name string
		body []byte
		want int
	}{
		{"plain", obj, http.StatusUnauthorized},
		{"trailing garbage", append(append([]byte{}, obj...), " garbage"...), http.StatusBadRequest},
		{"second object", append(append([]byte{}, obj...), `{"ott":""}`...), http.StatusBadRequest},
		{"trailing bracket", append(append([]byte{}, obj...), ']'), http.StatusBadRequest},
		{"not an object", []byte(`["x"]`), http.StatusBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, out := post(t, hc, tc.api.URL+"/1.0/sign", c.body)
			if st != c.want {
				t.Errorf("POST /1.0/sign %q = %d %v, want %d", c.name, st, out, c.want)
			}
		})
	}
	if certs := tc.certsOf(t, "pi"); len(certs) != 0 {
		t.Errorf("pi holds %d certificates after replaced-token requests, want 0", len(certs))
	}
}

// TestACMENamesBounded: a certificate that is not a device certificate
// (ACME) may name only household names and private addresses, so that the
// household root never vouches for a public name.
func TestACMENamesBounded(t *testing.T) {
	tc := newTestCA(t, Config{})
	custom := newTestCA(t, Config{ACMEDomains: []string{"Example.NET."}})
	cases := []struct {
		name string
		ca   *testCA
		crt  x509.Certificate
		ok   bool
	}{
		{"home.arpa name", tc, x509.Certificate{DNSNames: []string{"nas.home.arpa"}}, true},
		{"deep home.arpa name", tc, x509.Certificate{DNSNames: []string{"grafana.nas.home.arpa"}}, true},
		{".lan and .local", tc, x509.Certificate{DNSNames: []string{"printer.lan", "pi.local", "x.internal"}}, true},
		{"private IPs", tc, x509.Certificate{IPAddresses: []net.IP{net.ParseIP("192.168.1.10"), net.ParseIP("fd00::1"), net.ParseIP("100.100.1.2")}}, true},
		{"household CN", tc, x509.Certificate{Subject: pkix.Name{CommonName: "nas.home.arpa"}, DNSNames: []string{"nas.home.arpa"}}, true},
		{"public name", tc, x509.Certificate{DNSNames: []string{"www.bank.example"}}, false},
		{"public name after a household one", tc, x509.Certificate{DNSNames: []string{"nas.home.arpa", "bank.example"}}, false},
		{"suffix alone", tc, x509.Certificate{DNSNames: []string{"home.arpa"}}, false},
		{"suffix as a label prefix", tc, x509.Certificate{DNSNames: []string{"evilhome.arpa"}}, false},
		{"suffix inside a public name", tc, x509.Certificate{DNSNames: []string{"home.arpa.bank.example"}}, false},
		{"public IP", tc, x509.Certificate{IPAddresses: []net.IP{net.ParseIP("8.8.8.8")}}, false},
		{"public CN", tc, x509.Certificate{Subject: pkix.Name{CommonName: "bank.example"}, DNSNames: []string{"nas.home.arpa"}}, false},
		{"URI", tc, x509.Certificate{DNSNames: []string{"nas.home.arpa"}, URIs: []*url.URL{{Scheme: "https", Host: "bank.example"}}}, false},
		{"e-mail", tc, x509.Certificate{EmailAddresses: []string{"a@bank.example"}}, false},
		{"configured suffix", custom, x509.Certificate{DNSNames: []string{"media.example.net"}}, true},
		{"default suffix not configured", custom, x509.Certificate{DNSNames: []string{"nas.home.arpa"}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			crt := c.crt
			err := deviceEnforcer{c.ca.CA}.Enforce(&crt)
			if (err == nil) != c.ok {
				t.Errorf("Enforce(%v %v %v) = %v, want ok %v", crt.DNSNames, crt.IPAddresses, crt.Subject.CommonName, err, c.ok)
			}
		})
	}
	if err := (Config{ACMEDomains: []string{"not a domain"}}).Validate(); err == nil {
		t.Error("Validate(acme_domains: [\"not a domain\"]) = nil, want an error")
	}
}

// TestRenewNeedsARecordedLiveCertificate: smallstep's own renewal on the CA
// listener renews a certificate only if hearth recorded it, unrevoked, for
// the device's current incarnation, as hearth's /.hearth/v1/renew does.
// The revocation in smallstep's table is the second line: RevokeDevice
// only logs a failure to write it, and a certificate stored while a
// revocation runs is missing from the list it revokes there. Without the
// first line such a certificate of a revoked device renews into the
// device's next incarnation once the name is added again.
func TestRenewNeedsARecordedLiveCertificate(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	cert, leaf := tc.enrolled(t, "laptop", "system:read")
	if _, err := tc.RevokeDevice(ctx, "laptop"); err != nil {
		t.Fatal(err)
	}
	// The state a failed (logged) or raced smallstep revocation leaves.
	if err := tc.sdb.Del([]byte("revoked_x509_certs"), []byte(leaf.SerialNumber.String())); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.AddDevice(ctx, "laptop", []string{"system:admin"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/renew", "/1.0/renew", "/1.0/rekey"} {
		st, out := post(t, tc.client(cert), tc.api.URL+path, []byte(`{}`))
		if want := http.StatusUnauthorized; path != "/1.0/rekey" && st != want || st < 400 {
			t.Errorf("POST %s with a revoked incarnation's certificate = %d %v, want 401", path, st, out)
		}
		if crt, ok := out["crt"].(string); ok {
			if _, _, err := tc.LookupDevice(ctx, parseCertPEM(t, crt)); err == nil {
				t.Errorf("POST %s: the renewed certificate is accepted by LookupDevice", path)
			}
		}
	}
	if n := len(tc.certsOf(t, "laptop")); n != 0 {
		t.Errorf("the re-added laptop holds %d certificates, want 0", n)
	}
}

// Enrollment bodies are exactly one JSON object: a stray closing brace or
// bracket after it is refused like any other trailing data.
func TestEnrollBodyTrailingData(t *testing.T) {
	tc := newTestCA(t, Config{})
	tok, _ := tc.AddDevice(context.Background(), "pi", []string{"status"}, 0, 0)
	obj, _ := json.Marshal(EnrollRequest{Token: tok.Token, CSR: tc.deviceCSR(t, "pi", newKey(t))})
	for _, tail := range []string{"}", "]", "{}", "x"} {
		body := append(append([]byte{}, obj...), tail...)
		if st, out := post(t, tc.client(nil), tc.gateway.URL+EnrollPath, body); st != http.StatusBadRequest {
			t.Errorf("enroll with %q after the object = %d %v, want 400", tail, st, out)
		}
		if _, _, err := ParseEnrollRequest(body); err == nil {
			t.Errorf("ParseEnrollRequest with %q after the object = nil error", tail)
		}
	}
	if st, out := post(t, tc.client(nil), tc.gateway.URL+EnrollPath, obj); st != http.StatusCreated {
		t.Errorf("enroll = %d %v, want 201 (the token must still be usable)", st, out)
	}
}

// Revoking an unknown device says how to see the devices.
func TestRevokeUnknownDeviceSaysWhatToDo(t *testing.T) {
	tc := newTestCA(t, Config{})
	srv := httptest.NewServer(tc.AdminHandler())
	t.Cleanup(srv.Close)
	st, out := post(t, srv.Client(), srv.URL+AdminDevicesPath+"/nope/revoke", []byte(""))
	if st != http.StatusNotFound || !strings.Contains(fmt.Sprint(out["error"]), "hearth device list") {
		t.Errorf("revoke nope = %d %v, want 404 pointing to hearth device list", st, out)
	}
}

// TestRevokeDeviceRevokesCertificatesStoredMeanwhile: a certificate stored
// for the device while RevokeDevice runs (here: while it writes its audit
// entry) is revoked in smallstep's table too, not only in hearth's index.
func TestRevokeDeviceRevokesCertificatesStoredMeanwhile(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	tc.enrolled(t, "laptop", "system:read")
	_, late := tc.enrolled(t, "phone", "system:read") // a real certificate to reuse as laptop's
	lateCert := *late
	id, _ := url.Parse(tc.DeviceID("laptop"))
	lateCert.URIs = []*url.URL{id}
	lateCert.Raw = append([]byte("distinct DER "), late.Raw...)
	stored := false
	tc.audit.onRecord = func(e audit.Event) {
		if e.Name == audit.EventCertRevoke && !stored {
			stored = true
			if err := tc.storeDeviceCert("laptop", &lateCert, nil); err != nil {
				t.Errorf("storing laptop's late certificate: %v", err)
			}
		}
	}
	if _, err := tc.RevokeDevice(ctx, "laptop"); err != nil {
		t.Fatal(err)
	}
	if ok, err := tc.sdb.IsRevoked(lateCert.SerialNumber.String()); !ok || err != nil {
		t.Errorf("smallstep IsRevoked(late certificate) = %v %v, want true", ok, err)
	}
}

// TestAddDeviceRefusedAfterItsEntry: when the device enrolls while
// AddDevice writes its audit entry, the store write refuses the new token
// (the device is enrolled now) and the log says so after the success
// entry, rather than claiming a token that was never handed out.
func TestAddDeviceRefusedAfterItsEntry(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	first, err := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	once := false
	tc.audit.onRecord = func(e audit.Event) {
		if e.Name == audit.EventDeviceAdd && e.Outcome == audit.OutcomeSuccess && !once {
			once = true
			if st, out := tc.enroll(t, first.Token, tc.deviceCSR(t, "pi", newKey(t))); st != http.StatusCreated {
				t.Errorf("enroll = %d %v", st, out)
			}
		}
	}
	if _, err := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0); !errors.Is(err, ErrDeviceExists) {
		t.Fatalf("AddDevice while pi enrolls = %v, want ErrDeviceExists", err)
	}
	adds := tc.audit.named(audit.EventDeviceAdd, "")
	if len(adds) != 3 || adds[1].Outcome != audit.OutcomeSuccess || adds[2].Outcome != audit.OutcomeError || adds[2].Meta["corrects"] != adds[1].Meta["token_id"] {
		t.Errorf("device.add entries = %+v, want success, success, then an error correcting the second", adds)
	}
}

// A device enrolled against the CA listener (which `hearth enroll
// --ca-url` accepts) renews against it too: `hearth enroll --renew`
// otherwise met 404, retried until expiry and lost its certificate.
func TestRenewViaTheCAListener(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	tok, err := tc.AddDevice(ctx, "tv", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	res, err := Enroll(ctx, EnrollOptions{CAURL: tc.api.URL, Fingerprint: tok.Fingerprint, Token: tok.Token, OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Renew(ctx, RenewOptions{CAURL: tc.api.URL, Dir: out})
	if err != nil {
		t.Fatalf("Renew via the CA listener: %v", err)
	}
	if r2.Serial == res.Serial {
		t.Error("Renew via the CA listener kept the serial")
	}
	if ev := tc.audit.named(audit.EventCertRenew, audit.OutcomeSuccess); len(ev) != 1 || ev[0].Principal != "device:tv" {
		t.Errorf("cert.renew entries = %+v, want one for device:tv", ev)
	}
	// Without a client certificate it is refused, as on the gateway.
	if st, _ := post(t, tc.client(nil), tc.api.URL+RenewPath, []byte("")); st != http.StatusUnauthorized {
		t.Errorf("renew without mTLS on the CA listener = %d, want 401", st)
	}
}
