package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.step.sm/crypto/jose"
)

// The files `hearth enroll` writes in its output directory.
const (
	DeviceCertFile = "device.crt" // leaf and intermediate, PEM
	DeviceKeyFile  = "device.key" // PKCS#8 PEM, 0600
	DeviceRootFile = "root.crt"   // the pinned root, PEM
)

// EnrollOptions are the inputs of [Enroll], the device side of
// enrollment.
type EnrollOptions struct {
	// CAURL is the gateway's URL (https://host:8443) or the CA listener's.
	CAURL string
	// Fingerprint is the hex SHA-256 of the root certificate to pin.
	Fingerprint string
	// Token is the one-time enrollment token.
	Token string
	// OutDir receives device.crt, device.key and root.crt (created 0700).
	OutDir string
	// Dialer dials the CA; default net.Dialer.
	Dialer *net.Dialer
}

// EnrollResult says what Enroll or Renew wrote.
type EnrollResult struct {
	CertFile  string    `json:"cert_file"`
	KeyFile   string    `json:"key_file"`
	RootFile  string    `json:"root_file"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ErrFingerprint means the CA's root does not match the pinned fingerprint.
var ErrFingerprint = errors.New("ca: the CA's root certificate does not match the fingerprint")

// Enroll enrolls this device: it fetches the CA's root over TLS, checks
// its SHA-256 against the pinned fingerprint (in constant time) and the
// server's chain against that root only (trust on first use with an
// out-of-band pin, as `step ca bootstrap` does), generates an ECDSA P-256
// key that never leaves the device, sends a CSR with the enrollment token
// and writes the certificate chain, the key (0600) and the root.
func Enroll(ctx context.Context, o EnrollOptions) (*EnrollResult, error) {
	base, err := parseCAURL(o.CAURL)
	if err != nil {
		return nil, err
	}
	if o.Token == "" {
		return nil, errors.New("ca: no enrollment token (--token)")
	}
	root, err := FetchPinnedRoot(ctx, base, o.Fingerprint, o.Dialer)
	if err != nil {
		return nil, err
	}
	sub, sans := unverifiedTokenNames(o.Token)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: sub}}
	for _, s := range sans {
		if u, err := url.Parse(s); err == nil && u.Scheme == "spiffe" {
			tmpl.URIs = append(tmpl.URIs, u)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("ca: creating the CSR: %w", err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	hc := pinnedClient(root, nil, o.Dialer)
	var resp CertificateResponse
	if err := postJSON(ctx, hc, base+EnrollPath, EnrollRequest{Token: o.Token, CSR: string(csrPEM)}, &resp); err != nil {
		return nil, err
	}
	return writeDeviceFiles(o.OutDir, &resp, key, root)
}

// RenewOptions are the inputs of [Renew].
type RenewOptions struct {
	// CAURL is the gateway's URL.
	CAURL string
	// Dir holds device.crt, device.key and root.crt from Enroll.
	Dir string
	// Dialer dials the CA; default net.Dialer.
	Dialer *net.Dialer
}

// Renew renews the device certificate in o.Dir over mTLS with its current
// certificate, keeping the key (so the key file never changes and the
// certificate file is replaced atomically), against the root pinned at
// enrollment.
func Renew(ctx context.Context, o RenewOptions) (*EnrollResult, error) {
	base, err := parseCAURL(o.CAURL)
	if err != nil {
		return nil, err
	}
	rootPEM, err := os.ReadFile(filepath.Join(o.Dir, DeviceRootFile))
	if err != nil {
		return nil, fmt.Errorf("ca: %w (enroll first)", err)
	}
	blk, _ := pem.Decode(rootPEM)
	if blk == nil {
		return nil, fmt.Errorf("ca: %s is not PEM", DeviceRootFile)
	}
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", DeviceRootFile, err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(o.Dir, DeviceCertFile), filepath.Join(o.Dir, DeviceKeyFile))
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	hc := pinnedClient(root, &pair, o.Dialer)
	var resp CertificateResponse
	if err := postJSON(ctx, hc, base+RenewPath, RenewRequest{}, &resp); err != nil {
		return nil, err
	}
	return writeDeviceFiles(o.Dir, &resp, nil, root)
}

func parseCAURL(s string) (string, error) {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("ca: --ca-url %q is not an https URL such as https://hearth.home.arpa:8443", s)
	}
	return u.Scheme + "://" + u.Host + u.Path, nil
}

// unverifiedTokenNames reads the subject and SANs of a token, only to put
// them into the CSR; the CA verifies the token.
func unverifiedTokenNames(tok string) (string, []string) {
	jwt, err := jose.ParseSigned(tok)
	if err != nil {
		return "", nil
	}
	var cl tokenClaims
	if jwt.UnsafeClaimsWithoutVerification(&cl) != nil {
		return "", nil
	}
	return cl.Subject, cl.SANs
}

// FetchPinnedRoot fetches the root certificate from a hearth gateway
// (/.hearth/v1/roots.pem) or CA listener (/roots.pem), checks that its
// SHA-256 is fingerprint (hex, compared in constant time) and that the
// server's own chain verifies against it for the URL's host.
func FetchPinnedRoot(ctx context.Context, baseURL, fingerprint string, dialer *net.Dialer) (*x509.Certificate, error) {
	want, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(fingerprint), ":", ""))
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("ca: --fingerprint %q is not a hex SHA-256 (64 hex digits)", fingerprint)
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	var peer []*x509.Certificate
	// The first connection cannot verify the server: it only fetches the
	// public root, which is then checked against the pin, and the chain
	// the server presented on this very connection is verified against
	// that root before anything else is sent.
	cfg := &tls.Config{
		InsecureSkipVerify: true, // verified below against the pinned root
		MinVersion:         tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			peer = cs.PeerCertificates
			return nil
		},
	}
	hc := &http.Client{Transport: transport(cfg, dialer), Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	var rootPEM []byte
	for _, p := range []string{RootsPath, "/roots.pem"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+p, nil)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("ca: reaching %s: %w", baseURL, err)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			rootPEM = b
			break
		}
	}
	if rootPEM == nil {
		return nil, fmt.Errorf("ca: %s serves no root certificate (is it a hearth gateway?)", baseURL)
	}
	var root *x509.Certificate
	for rest := rootPEM; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		sum := sha256.Sum256(blk.Bytes)
		if blk.Type == "CERTIFICATE" && subtle.ConstantTimeCompare(sum[:], want) == 1 {
			root, err = x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("ca: root certificate: %w", err)
			}
			break
		}
	}
	if root == nil {
		return nil, ErrFingerprint
	}
	if len(peer) == 0 {
		return nil, errors.New("ca: the server presented no certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	if _, err := peer[0].Verify(x509.VerifyOptions{DNSName: u.Hostname(), Roots: pool, Intermediates: inter}); err != nil {
		return nil, fmt.Errorf("ca: the server's certificate does not verify against the pinned root: %w", err)
	}
	return root, nil
}

func transport(cfg *tls.Config, dialer *net.Dialer) *http.Transport {
	if dialer == nil {
		dialer = &net.Dialer{Timeout: 15 * time.Second}
	}
	return &http.Transport{
		TLSClientConfig:     cfg,
		DialContext:         dialer.DialContext,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 15 * time.Second,
	}
}

// pinnedClient trusts the pinned root only.
func pinnedClient(root *x509.Certificate, cert *tls.Certificate, dialer *net.Dialer) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: transport(cfg, dialer), Timeout: 60 * time.Second}
}

// APIError is an error answer of hearth: {"error", "code"} and the status.
type APIError struct {
	Status  int
	Message string `json:"error"`
	Code    string `json:"code"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("ca: the CA refused (%d %s): %s", e.Status, e.Code, e.Message)
}

func postJSON(ctx context.Context, hc *http.Client, url string, in, out any) error {
	defer hc.CloseIdleConnections()
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		e := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(body, e) != nil || e.Message == "" {
			e.Message = resp.Status
		}
		return e
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("ca: bad answer from the CA: %w", err)
	}
	return nil
}

// writeDeviceFiles writes the key (if new), the chain and the root, each
// through a temporary file renamed into place.
func writeDeviceFiles(dir string, resp *CertificateResponse, key *ecdsa.PrivateKey, root *x509.Certificate) (*EnrollResult, error) {
	blk, _ := pem.Decode([]byte(resp.Certificate))
	if blk == nil {
		return nil, errors.New("ca: the CA answered without a certificate")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: the CA's certificate: %w", err)
	}
	if key != nil {
		if pk, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pk.Equal(&key.PublicKey) {
			return nil, errors.New("ca: the CA's certificate is not for this device's key")
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	res := &EnrollResult{
		CertFile: filepath.Join(dir, DeviceCertFile), KeyFile: filepath.Join(dir, DeviceKeyFile),
		RootFile: filepath.Join(dir, DeviceRootFile), Serial: leaf.SerialNumber.String(),
		NotBefore: leaf.NotBefore, ExpiresAt: leaf.NotAfter,
	}
	if key != nil {
		if err := replaceFile(res.KeyFile, mustPEMKey(key), 0o600); err != nil {
			return nil, err
		}
	}
	chain := resp.Certificate
	if !strings.HasSuffix(chain, "\n") {
		chain += "\n"
	}
	chain += resp.Chain
	if err := replaceFile(res.CertFile, []byte(chain), 0o644); err != nil {
		return nil, err
	}
	if err := replaceFile(res.RootFile, pemCerts(root), 0o644); err != nil {
		return nil, err
	}
	return res, nil
}

func replaceFile(path string, data []byte, mode os.FileMode) error {
	tmp := fmt.Sprintf("%s.tmp-%d", path, os.Getpid())
	_ = os.Remove(tmp)
	if err := writeFileSync(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

// ReadDeviceCert returns the validity of the certificate in dir.
func ReadDeviceCert(dir string) (*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(dir, DeviceCertFile))
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("ca: %s is not PEM", DeviceCertFile)
	}
	return x509.ParseCertificate(blk.Bytes)
}
