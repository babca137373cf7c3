package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/x509util"

	smalldb "github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql/database"

	"github.com/hearth-home/hearth/internal/pgnosql"
)

// The files under <dir>/ca/.
const (
	dirName          = "ca"
	rootCertFile     = "root_ca.crt"
	rootKeyFile      = "root_ca.key"
	interCertFile    = "intermediate_ca.crt"
	interKeyFile     = "intermediate_ca.key"
	gatewayCertFile  = "gateway.crt" // leaf and intermediate
	gatewayKeyFile   = "gateway.key"
	provisionerFile  = "provisioner.json" // the JWK provisioner's private key
	smallstepDBFile  = "db"               // smallstep's nosql bbolt database
	rootLifetime     = 10 * 365 * 24 * time.Hour
	interLifetime    = 10 * 365 * 24 * time.Hour
	gatewayLifetime  = 365 * 24 * time.Hour
	provisionerName  = "hearth"
	acmeProvisioner  = "acme"
	defaultHousehold = "hearth"
)

// InitOptions are the inputs of [Init]. The zero value works.
type InitOptions struct {
	// Name is the household's name, used in the CA subjects. Default "hearth".
	Name string
	// Hosts are the DNS names and IP addresses of the gateway's (and the CA
	// listener's) server certificate. localhost, 127.0.0.1 and ::1 are always
	// added.
	Hosts []string
	// TrustDomain is checked here so that init fails early on a bad one;
	// the identities use ca.trust_domain of hearth.yaml. Default
	// "hearth.home.arpa".
	TrustDomain string
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// CADB, when set, is the CA database the CA will run on (see
	// Options.CADB): Init creates smallstep's tables in it instead of the
	// bbolt file <dir>/ca/db. Init leaves it open.
	CADB database.DB
}

// InitResult is what [Init] created.
type InitResult struct {
	// Dir is <dir>/ca.
	Dir string
	// Fingerprint is the hex SHA-256 of the root certificate's DER, the
	// value devices pin with `hearth enroll --fingerprint`.
	Fingerprint string
	// RootPEM is the path of the root certificate (PEM).
	RootPEM string
	// Hosts are the names in the gateway certificate.
	Hosts []string
}

// ErrExists is returned by Init when the data dir already has a CA.
var ErrExists = errors.New("ca: a CA already exists in this data dir")

// Init creates the CA under <dir>/ca: a root and an intermediate (ECDSA
// P-256), the gateway's server certificate for opts.Hosts, the JWK
// provisioner key that signs enrollment tokens, and smallstep's database.
//
// The CA's database is smallstep's own nosql bbolt file (<dir>/ca/db), not
// hearth.db: smallstep's nosql bbolt driver opens its file itself (bbolt
// takes an exclusive file lock, so the two cannot share one file in one
// process), and keeping smallstep's tables (tokens, certs, revocations,
// ACME) in its own file lets the same nosql interface move to PostgreSQL
// for replicas (opts.CADB: then Init creates smallstep's tables there and
// writes no file). hearth's own device records live in hearth's store
// (buckets "ca.*").
//
// Everything is written to a temporary directory that is renamed into
// place at the end, so that a failure leaves nothing half-written; Init
// refuses (and changes nothing) when <dir>/ca exists. Directories are 0700,
// keys 0600.
func Init(dir string, opts InitOptions) (*InitResult, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	name := opts.Name
	if name == "" {
		name = defaultHousehold
	}
	if opts.TrustDomain != "" && !validTrustDomain(opts.TrustDomain) {
		return nil, fmt.Errorf("%w: trust domain %q is not a lowercase DNS name", ErrConfig, opts.TrustDomain)
	}
	hosts, err := normalizeHosts(opts.Hosts)
	if err != nil {
		return nil, err
	}
	final := filepath.Join(dir, dirName)
	if _, err := os.Lstat(final); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrExists, final)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".ca-init-")
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op after the rename
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}

	t := now().UTC().Truncate(time.Second)
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	root, err := newCACert(name+" Root CA", x509util.DefaultRootTemplate, rootKey, nil, rootKey, t, rootLifetime)
	if err != nil {
		return nil, err
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	inter, err := newCACert(name+" Intermediate CA", x509util.DefaultIntermediateTemplate, interKey, root, rootKey, t, interLifetime)
	if err != nil {
		return nil, err
	}
	gwKey, gwChain, err := newServerCert(name, hosts, inter, interKey, t)
	if err != nil {
		return nil, err
	}
	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		return nil, fmt.Errorf("ca: provisioner key: %w", err)
	}
	jwkJSON, err := json.Marshal(jwk)
	if err != nil {
		return nil, fmt.Errorf("ca: provisioner key: %w", err)
	}

	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{rootCertFile, pemCerts(root), 0o644},
		{interCertFile, pemCerts(inter), 0o644},
		{gatewayCertFile, pemCerts(gwChain...), 0o644},
		{rootKeyFile, mustPEMKey(rootKey), 0o600},
		{interKeyFile, mustPEMKey(interKey), 0o600},
		{gatewayKeyFile, mustPEMKey(gwKey), 0o600},
		{provisionerFile, jwkJSON, 0o600},
	}
	for _, f := range files {
		if err := writeFileSync(filepath.Join(tmp, f.name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	// Create smallstep's database and its tables now, so that serve finds
	// a complete CA.
	if err := initCADB(tmp, opts.CADB); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return &InitResult{
		Dir:         final,
		Fingerprint: Fingerprint(root),
		RootPEM:     filepath.Join(final, rootCertFile),
		Hosts:       hosts,
	}, nil
}

// Fingerprint returns the hex SHA-256 of cert's DER, the form `step ca
// bootstrap --fingerprint` and `hearth enroll --fingerprint` take.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

func normalizeHosts(in []string) ([]string, error) {
	out := []string{"localhost", "127.0.0.1", "::1"}
	for _, h := range in {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			h = ip.String()
		} else if _, err := x509util.SanitizeName(h); err != nil || strings.ContainsAny(h, " /:@*") {
			return nil, fmt.Errorf("ca: host %q is neither a DNS name nor an IP address", h)
		}
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	// The first name is the one URLs are built from: prefer a configured
	// name over localhost.
	if len(out) > 3 {
		out = append(out[3:], out[:3]...)
	}
	return out, nil
}

func newCACert(subject, tmpl string, key crypto.Signer, parent *x509.Certificate, parentKey crypto.Signer, now time.Time, life time.Duration) (*x509.Certificate, error) {
	cr, err := x509util.CreateCertificateRequest(subject, nil, key)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", subject, err)
	}
	c, err := x509util.NewCertificate(cr, x509util.WithTemplate(tmpl, x509util.CreateTemplateData(subject, nil)))
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", subject, err)
	}
	t := c.GetCertificate()
	t.NotBefore = now.Add(-time.Minute)
	t.NotAfter = now.Add(life)
	if parent == nil {
		parent = t
	}
	cert, err := x509util.CreateCertificate(t, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", subject, err)
	}
	return cert, nil
}

// newServerCert issues the gateway's TLS server certificate: serverAuth
// only, the given hosts as SANs (RFC 5280 §4.2.1.6; the CN is not used for
// names, RFC 6125 §6.4.4).
func newServerCert(name string, hosts []string, inter *x509.Certificate, interKey crypto.Signer, now time.Time) (*ecdsa.PrivateKey, []*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	t := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name + " gateway"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(gatewayLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			t.IPAddresses = append(t.IPAddresses, ip)
		} else {
			t.DNSNames = append(t.DNSNames, h)
		}
	}
	leaf, err := x509util.CreateCertificate(t, inter, key.Public(), interKey)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: gateway certificate: %w", err)
	}
	return key, []*x509.Certificate{leaf, inter}, nil
}

// randomSerial returns a positive 128-bit serial (CA/B Forum BR §7.1: at
// least 64 bits of CSPRNG output).
func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	b[0] &= 0x7f
	b[0] |= 0x40
	return new(big.Int).SetBytes(b), nil
}

func pemCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func mustPEMKey(k crypto.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic("ca: marshal key: " + err.Error()) // only our own generated keys reach here
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// writeFileSync writes data with mode (created with it, so a key is never
// readable by others, not even briefly) and fsyncs it.
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("ca: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("ca: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return os.Chmod(path, mode) // umask may have narrowed it; never widened
}

// initCADB creates smallstep's tables: in cadb when given, else in a new
// bbolt file (mode 0600) in dir.
func initCADB(dir string, cadb database.DB) error {
	if cadb != nil {
		if _, err := pgnosql.NewAuthDB(cadb); err != nil {
			return fmt.Errorf("ca: creating the CA database: %w", err)
		}
		return nil
	}
	sdb, err := smalldb.New(&smalldb.Config{Type: "bbolt", DataSource: filepath.Join(dir, smallstepDBFile)})
	if err != nil {
		return fmt.Errorf("ca: creating the CA database: %w", err)
	}
	if err := sdb.Shutdown(); err != nil {
		return fmt.Errorf("ca: creating the CA database: %w", err)
	}
	if err := os.Chmod(filepath.Join(dir, smallstepDBFile), 0o600); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}
