package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/hearth-home/hearth/audit"
)

func TestPhoneLinkSingleUse(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	l, err := tc.AddPhoneLink(ctx, "alices-phone", []string{"system:read"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.ExpiresAt.Sub(tc.now()); got < 9*time.Minute || got > 10*time.Minute {
		t.Errorf("link lives %s, want the 10m default", got)
	}
	// Only a hash is stored: the secret's bytes appear nowhere in the store.
	raw, _ := linkEncoding.DecodeString(strings.ToUpper(l.Secret))
	if err := tc.db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if bytes.Contains(k, raw) || bytes.Contains(v, raw) || bytes.Contains(v, []byte(l.Secret)) {
					t.Errorf("bucket %s holds the link secret", name)
				}
				return nil
			})
		})
	}); err != nil {
		t.Fatal(err)
	}
	// Reading it any number of times consumes nothing.
	for i := 0; i < 3; i++ {
		info, err := tc.PhoneLinkInfo(ctx, l.Secret)
		if err != nil || info.Device != "alices-phone" {
			t.Fatalf("PhoneLinkInfo #%d = %+v, %v", i, info, err)
		}
	}
	// Concurrent claims: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wins []*PhoneClaim
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := tc.ClaimPhoneLink(ctx, l.Secret)
			if err == nil {
				mu.Lock()
				wins = append(wins, cl)
				mu.Unlock()
			} else if !errors.Is(err, ErrLinkInvalid) {
				t.Errorf("claim: %v", err)
			}
		}()
	}
	wg.Wait()
	if len(wins) != 1 {
		t.Fatalf("%d claims succeeded, want 1", len(wins))
	}
	if _, err := tc.PhoneLinkInfo(ctx, l.Secret); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("PhoneLinkInfo after the claim = %v, want ErrLinkInvalid", err)
	}
	pc, err := tc.IssuePhoneCredential(ctx, *wins[0])
	if err != nil {
		t.Fatal(err)
	}
	// The claim issues once.
	if _, err := tc.IssuePhoneCredential(ctx, *wins[0]); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("second issue = %v, want ErrLinkInvalid", err)
	}
	if name, _, err := tc.LookupDevice(ctx, pc.Chain[0]); err != nil || name != "alices-phone" {
		t.Errorf("LookupDevice(issued) = %q, %v", name, err)
	}
	for _, e := range tc.audit.events {
		for _, v := range append([]string{e.Reason, e.Resource}, mapsValues(e.Meta)...) {
			if strings.Contains(strings.ToLower(v), l.Secret) {
				t.Errorf("audit entry %s carries the link secret", e.Name)
			}
		}
	}
	if n := len(tc.audit.named(audit.EventDeviceEnroll, audit.OutcomeSuccess)); n != 2 {
		t.Errorf("%d successful device.enroll entries, want 2 (claim, issue)", n)
	}
}

func mapsValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestPhoneLinkExpiresAndIsReplaced(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	l, err := tc.AddPhoneLink(ctx, "tablet", []string{"system:read"}, 2*time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now()
	tc.now = func() time.Time { return base.Add(2*time.Minute + time.Second) }
	if _, err := tc.ClaimPhoneLink(ctx, l.Secret); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("claim after expiry = %v, want ErrLinkInvalid", err)
	}
	tc.now = time.Now
	l1, _ := tc.AddPhoneLink(ctx, "tablet", []string{"system:read"}, 0, 0)
	l2, _ := tc.AddPhoneLink(ctx, "tablet", []string{"system:read"}, 0, 0)
	if _, err := tc.ClaimPhoneLink(ctx, l1.Secret); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("claim of a replaced link = %v, want ErrLinkInvalid", err)
	}
	for _, bad := range []string{"", "x", strings.Repeat("a", 32), l2.Secret + "a"} {
		if _, err := tc.PhoneLinkInfo(ctx, bad); !errors.Is(err, ErrLinkInvalid) {
			t.Errorf("PhoneLinkInfo(%q) = %v, want ErrLinkInvalid", bad, err)
		}
	}
	if _, err := tc.ClaimPhoneLink(ctx, strings.ToUpper(l2.Secret)); err != nil {
		t.Errorf("claim of the current link (upper case) = %v", err)
	}
}

// issuePhone claims a fresh link and issues its credential.
func issuePhone(t *testing.T, tc *testCA, name string) *PhoneCredential {
	t.Helper()
	ctx := context.Background()
	l, err := tc.AddPhoneLink(ctx, name, []string{"system:read"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := tc.ClaimPhoneLink(ctx, l.Secret)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := tc.IssuePhoneCredential(ctx, *cl)
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// checkIdentity: key matches the certificate, clientAuth only, chains to
// the household root.
func checkIdentity(t *testing.T, tc *testCA, key any, leaf *x509.Certificate, cas []*x509.Certificate) {
	t.Helper()
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok || !ek.PublicKey.Equal(leaf.PublicKey) {
		t.Errorf("the key does not match the certificate")
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || leaf.IsCA {
		t.Errorf("EKU = %v, IsCA = %v; want clientAuth only, not a CA", leaf.ExtKeyUsage, leaf.IsCA)
	}
	inter := x509.NewCertPool()
	for _, c := range cas {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: tc.Roots(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the certificate does not chain to the household root: %v", err)
	}
}

func TestPhonePKCS12Files(t *testing.T) {
	tc := newTestCA(t, Config{})
	pc := issuePhone(t, tc, "bobs-phone")
	const pw = "abcdefghijkmnpqrstuv"
	openssl, err := exec.LookPath("openssl")
	if err != nil && os.Getenv("CI") != "" {
		t.Fatal("openssl is required (apt-get install -y openssl)")
	}
	for _, enc := range []PKCS12Encoding{PKCS12Legacy, PKCS12Modern} {
		b, err := pc.PKCS12(enc, pw)
		if err != nil {
			t.Fatal(err)
		}
		key, leaf, cas, err := pkcs12.DecodeChain(b, pw)
		if err != nil {
			t.Fatalf("go-pkcs12 DecodeChain(enc %d): %v", enc, err)
		}
		checkIdentity(t, tc, key, leaf, cas)
		if _, _, _, err := pkcs12.DecodeChain(b, "wrong"); err == nil {
			t.Errorf("enc %d decodes with a wrong password", enc)
		}
		if openssl == "" {
			t.Logf("openssl not found: skipping its check outside CI")
			continue
		}
		p := filepath.Join(t.TempDir(), "f.p12")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		// OpenSSL 3's default provider, no -legacy: 3DES is still there.
		out, err := exec.Command(openssl, "pkcs12", "-in", p, "-passin", "pass:"+pw, "-nodes", "-info").CombinedOutput()
		if err != nil {
			t.Fatalf("openssl pkcs12 (enc %d): %v\n%s", enc, err, out)
		}
		s := string(out)
		if !strings.Contains(s, "BEGIN PRIVATE KEY") || strings.Count(s, "BEGIN CERTIFICATE") != 3 {
			t.Errorf("openssl output lacks the key or the three certificates:\n%s", s)
		}
		want := map[PKCS12Encoding]string{PKCS12Legacy: "pbeWithSHA1And3-KeyTripleDES-CBC", PKCS12Modern: "PBES2"}[enc]
		if !strings.Contains(s, want) {
			t.Errorf("enc %d: openssl -info does not report %s:\n%s", enc, want, s)
		}
	}
}

// plistNode is a generic XML element, for reading a property list.
type plistNode struct {
	XMLName xml.Name
	Content string      `xml:",chardata"`
	Nodes   []plistNode `xml:",any"`
}

// dictGet returns the value element after <key>k</key> in a <dict>.
func dictGet(d plistNode, k string) (plistNode, bool) {
	for i := 0; i+1 < len(d.Nodes); i++ {
		if d.Nodes[i].XMLName.Local == "key" && d.Nodes[i].Content == k {
			return d.Nodes[i+1], true
		}
	}
	return plistNode{}, false
}

func TestPhoneMobileConfig(t *testing.T) {
	tc := newTestCA(t, Config{})
	pc := issuePhone(t, tc, "ipad")
	const pw = "wxyzabcdefghijkmnpqr"
	b, err := pc.MobileConfig("ipad", pw)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(pw)) || bytes.Contains(b, []byte("<key>Password</key>")) {
		t.Errorf("the profile carries the password")
	}
	// Well-formed XML, with no other tokens than the plist.
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the profile is not well-formed XML: %v", err)
		}
	}
	var root plistNode
	if err := xml.Unmarshal(b, &root); err != nil || root.XMLName.Local != "plist" || len(root.Nodes) != 1 {
		t.Fatalf("not a plist: %v", err)
	}
	top := root.Nodes[0]
	if v, _ := dictGet(top, "PayloadType"); v.Content != "Configuration" {
		t.Errorf("PayloadType = %q", v.Content)
	}
	arr, ok := dictGet(top, "PayloadContent")
	if !ok || arr.XMLName.Local != "array" || len(arr.Nodes) != 1 {
		t.Fatalf("PayloadContent is not an array of one payload")
	}
	p := arr.Nodes[0]
	if v, _ := dictGet(p, "PayloadType"); v.Content != "com.apple.security.pkcs12" {
		t.Errorf("payload type = %q", v.Content)
	}
	for _, k := range []string{"PayloadIdentifier", "PayloadUUID", "PayloadVersion"} {
		if _, ok := dictGet(p, k); !ok {
			t.Errorf("payload lacks %s", k)
		}
	}
	data, _ := dictGet(p, "PayloadContent")
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(data.Content), ""))
	if err != nil {
		t.Fatal(err)
	}
	key, leaf, cas, err := pkcs12.DecodeChain(raw, pw)
	if err != nil {
		t.Fatalf("the payload's PKCS#12: %v", err)
	}
	checkIdentity(t, tc, key, leaf, cas)
}

// TestClientCAsNameTheIssuer: a TLS server configured with ClientCAs
// sends the intermediate (the device certificates' direct issuer) in its
// CertificateRequest, which iOS needs.
func TestClientCAsNameTheIssuer(t *testing.T) {
	tc := newTestCA(t, Config{})
	pc := issuePhone(t, tc, "phone")
	var got [][]byte
	srvCfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*tc.ServerCertificate()},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: tc.ClientCAs()}
	cliCfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: tc.Roots(), ServerName: "hearth.test",
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			got = cri.AcceptableCAs
			return &tls.Certificate{Certificate: [][]byte{pc.Chain[0].Raw, pc.Chain[1].Raw}, PrivateKey: pc.Key}, nil
		}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			err = c.(*tls.Conn).Handshake()
			c.Close()
		}
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	issuer := pc.Chain[0].RawIssuer
	if !slices.ContainsFunc(got, func(n []byte) bool { return bytes.Equal(n, issuer) }) {
		t.Errorf("the CertificateRequest names %d CAs, not the leaf's direct issuer", len(got))
	}
}

// FuzzLinkKey: a link secret from a URL is accepted only in its canonical
// form, so two spellings never name one link.
func FuzzLinkKey(f *testing.F) {
	for _, s := range []string{"", "mtuelyv2aembojca5qmlwccwv5qwqqzw", "MTUELYV2AEMBOJCA5QMLWCCWV5QWQQZW", "mtuelyv2aembojca5qmlwccwv5qwqqzwa", "====", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, ok := linkKey(s)
		if !ok {
			return
		}
		if len(k) != 32 {
			t.Fatalf("key of %d bytes", len(k))
		}
		if canon := strings.ToUpper(strings.TrimSpace(s)); len(canon) != 32 {
			t.Fatalf("accepted %q of %d characters", s, len(canon))
		}
	})
}

// BenchmarkPhoneEnrollment: one whole phone enrollment on the CA's side
// (add with link, claim, key + certificate in memory, LegacyDES and Modern
// PKCS#12), with an in-memory audit recorder.
func BenchmarkPhoneEnrollment(b *testing.B) {
	tc := newTestCA(b, Config{})
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		name := "phone-" + strconv.Itoa(i)
		l, err := tc.AddPhoneLink(ctx, name, []string{"system:read"}, 0, 0)
		if err != nil {
			b.Fatal(err)
		}
		cl, err := tc.ClaimPhoneLink(ctx, l.Secret)
		if err != nil {
			b.Fatal(err)
		}
		pc, err := tc.IssuePhoneCredential(ctx, *cl)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := pc.PKCS12(PKCS12Legacy, "abcdefghijkmnpqrstuv"); err != nil {
			b.Fatal(err)
		}
	}
}
