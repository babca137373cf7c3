package ca

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/smallstep/nosql/database"
	"go.step.sm/crypto/jose"

	"github.com/smallstep/certificates/acme"
	acmeNoSQL "github.com/smallstep/certificates/acme/db/nosql"
	"github.com/smallstep/certificates/authority"
	authconfig "github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/policy"
	"github.com/smallstep/certificates/authority/provisioner"
	smalldb "github.com/smallstep/certificates/db"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/pgnosql"
	"github.com/hearth-home/hearth/internal/ratelimit"
	"github.com/hearth-home/hearth/internal/store"
)

// Options are the parts of hearth the CA uses. Zero fields get defaults.
type Options struct {
	// Store is hearth's store (hearth.db through boltstore, or PostgreSQL
	// through pgstore); the CA keeps its device records, their
	// certificate indexes and the phone enrollment links in buckets named
	// "ca.*". Required; Close leaves it open.
	Store store.Store
	// CADB is the CA's own database (smallstep's tables: issued and
	// revoked certificates, used one-time tokens, ACME), for example
	// internal/pgnosql on PostgreSQL, whose compare-and-swap is atomic
	// across replicas. nil means smallstep's bbolt file <dir>/ca/db, as
	// [Init] creates it. Close leaves a given CADB open.
	CADB database.DB
	// Policy expands the capabilities granted to a device; an unknown
	// capability is refused. Required.
	Policy *authz.Policy
	// Audit receives every issue, renewal, revocation and refusal.
	// Default: audit.Discard (only for tests of other packages).
	Audit audit.Recorder
	// Logger is the structured logger. Default: zerolog.Nop().
	Logger zerolog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// PublicURL is the gateway's URL as devices reach it, e.g.
	// "https://hearth.home.arpa:8443"; enrollment tokens carry it.
	// Default "https://<first host>:8443".
	PublicURL string
}

// CA is an open certificate authority. It is safe for concurrent use.
type CA struct {
	dir    string
	set    settings
	st     store.Store
	cadb   database.DB                  // nil: the bbolt file
	policy atomic.Pointer[authz.Policy] // swapped by SetPolicy on a reload
	audit  audit.Recorder
	log    zerolog.Logger
	now    func() time.Time

	publicURL   string
	caURL       string // token audience base: https://<first host>:<CA port>
	caPublicURL string // what devices are told: https://<public host>:<CA port>
	hosts       []string

	root, inter   *x509.Certificate
	interKey      crypto.Signer
	roots         *x509.CertPool
	intermediates *x509.CertPool
	rootPEM       []byte
	serverCert    atomic.Pointer[tls.Certificate] // renewed in place by GetCertificate
	gwMu          sync.Mutex                      // one renewal of the gateway certificate at a time
	gwRetry       time.Time                       // after a failed renewal, not before this
	fingerprint   string

	jwk    *jose.JSONWebKey // the provisioner's private key
	signer jose.Signer

	auth   *authority.Authority
	sdb    *certDB
	acmeDB acme.DB

	devices *deviceStore
	thr     *ratelimit.Limiter // per-address budget of failed enroll/sign/renew/revoke
	thrNow  func() time.Time   // thr's clock: c.now unless a test fakes it

	apiOnce    sync.Once
	apiHandler http.Handler
}

// Open opens the CA that [Init] created under <dir>/ca and starts the
// embedded smallstep authority (not its listeners: the server mounts
// [CA.APIHandler] and [CA.PublicHandler]).
func Open(dir string, cfg Config, opts Options) (*CA, error) {
	set, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	if opts.Store == nil {
		return nil, errors.New("ca: Options.Store (hearth's store) is required")
	}
	if opts.Policy == nil {
		return nil, errors.New("ca: Options.Policy is required")
	}
	c := &CA{
		dir:   filepath.Join(dir, dirName),
		set:   set,
		st:    opts.Store,
		cadb:  opts.CADB,
		audit: opts.Audit,
		log:   opts.Logger,
		now:   opts.Now,
	}
	c.policy.Store(opts.Policy)
	if c.audit == nil {
		c.audit = audit.Discard{}
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.thr, c.thrNow = newFailThrottle(failBurst), c.now
	if err := c.loadPKI(); err != nil {
		return nil, err
	}
	c.publicURL = strings.TrimRight(opts.PublicURL, "/")
	if c.publicURL == "" {
		c.publicURL = "https://" + hostPort(c.hosts[0], "8443")
	}
	_, caPort, _ := net.SplitHostPort(set.listen)
	c.caURL = "https://" + hostPort(c.hosts[0], caPort)
	// The CA URL a device is told (`step ca bootstrap`) names the host of
	// the public URL, as the device reaches it, not the first name of the
	// gateway certificate. Tokens keep their audience (c.caURL): the CA
	// accepts every name of its certificate.
	c.caPublicURL = c.caURL
	if u, err := url.Parse(c.publicURL); err == nil && u.Hostname() != "" {
		c.caPublicURL = "https://" + hostPort(u.Hostname(), caPort)
	}

	ctx := context.Background()
	if c.devices, err = newDeviceStore(ctx, c.st, c.now); err != nil {
		return nil, err
	}
	if err := c.startAuthority(); err != nil {
		c.devices.close()
		return nil, err
	}
	if err := c.migrateCertIndex(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func hostPort(host, port string) string {
	if port == "" || port == "443" {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

// loadPKI reads the certificates and keys Init wrote.
func (c *CA) loadPKI() error {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(c.dir, name))
		if err != nil {
			return nil, fmt.Errorf("ca: %w (run `hearth init` first)", err)
		}
		return b, nil
	}
	certs := func(name string) ([]*x509.Certificate, error) {
		b, err := read(name)
		if err != nil {
			return nil, err
		}
		var out []*x509.Certificate
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			crt, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("ca: %s: %w", name, err)
			}
			out = append(out, crt)
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("ca: %s holds no certificate", name)
		}
		return out, nil
	}
	key := func(name string) (crypto.Signer, error) {
		path := filepath.Join(c.dir, name)
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("ca: %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
		}
		b, err := read(name)
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("ca: %s is not PEM", name)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: %s: %w", name, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("ca: %s is not a signing key", name)
		}
		return s, nil
	}

	rc, err := certs(rootCertFile)
	if err != nil {
		return err
	}
	ic, err := certs(interCertFile)
	if err != nil {
		return err
	}
	c.root, c.inter = rc[0], ic[0]
	if c.interKey, err = key(interKeyFile); err != nil {
		return err
	}
	if pub, ok := c.interKey.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(c.inter.PublicKey) {
		return errors.New("ca: the intermediate key does not match its certificate (an interrupted hearth ca rotate-intermediate? run it again)")
	}
	gw, err := certs(gatewayCertFile)
	if err != nil {
		return err
	}
	gwKey, err := key(gatewayKeyFile)
	if err != nil {
		return err
	}
	if gw, gwKey, err = c.renewGatewayIfDue(gw, gwKey); err != nil {
		return err
	}
	c.serverCert.Store(tlsCertificate(gw, gwKey))
	c.hosts = append(c.hosts, gw[0].DNSNames...)
	for _, ip := range gw[0].IPAddresses {
		c.hosts = append(c.hosts, ip.String())
	}
	if len(c.hosts) == 0 {
		return errors.New("ca: the gateway certificate names no host")
	}
	c.roots = x509.NewCertPool()
	c.roots.AddCert(c.root)
	c.intermediates = x509.NewCertPool()
	c.intermediates.AddCert(c.inter)
	if _, err := c.inter.Verify(x509.VerifyOptions{Roots: c.roots, CurrentTime: c.inter.NotBefore.Add(time.Hour)}); err != nil {
		return fmt.Errorf("ca: the intermediate does not chain to the root: %w", err)
	}
	c.rootPEM = pemCerts(c.root)
	c.fingerprint = Fingerprint(c.root)

	b, err := read(provisionerFile)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(filepath.Join(c.dir, provisionerFile)); err != nil || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("ca: %s must exist with mode 0600", filepath.Join(c.dir, provisionerFile))
	}
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(b, &jwk); err != nil || jwk.IsPublic() || jwk.KeyID == "" {
		return fmt.Errorf("ca: %s is not a private JWK", provisionerFile)
	}
	c.jwk = &jwk
	c.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jwk.Key},
		new(jose.SignerOptions).WithType("JWT").WithHeader("kid", jwk.KeyID))
	if err != nil {
		return fmt.Errorf("ca: provisioner signer: %w", err)
	}
	return nil
}

// renewGatewayIfDue reissues the gateway's server certificate (same
// names, new key) when two thirds of its lifetime have passed, so that a
// hearth that keeps running across restarts never serves an expired one.
func (c *CA) renewGatewayIfDue(chain []*x509.Certificate, key crypto.Signer) ([]*x509.Certificate, crypto.Signer, error) {
	leaf := chain[0]
	now := c.now()
	if now.Before(NextRenewal(leaf.NotBefore, leaf.NotAfter)) {
		return chain, key, nil
	}
	hosts := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	name := strings.TrimSuffix(leaf.Subject.CommonName, " gateway")
	nk, nchain, err := newServerCert(name, hosts, c.inter, c.interKey, now.UTC().Truncate(time.Second))
	if err != nil {
		return nil, nil, err
	}
	if err := replaceFile(filepath.Join(c.dir, gatewayKeyFile), mustPEMKey(nk), 0o600); err != nil {
		return nil, nil, err
	}
	if err := replaceFile(filepath.Join(c.dir, gatewayCertFile), pemCerts(nchain...), 0o644); err != nil {
		return nil, nil, err
	}
	c.log.Info().Time("not_after", nchain[0].NotAfter).Msg("ca: gateway certificate renewed")
	return nchain, nk, nil
}

// deviceTemplate shapes every certificate the JWK provisioner signs: the
// subject is the device name from the token, the only SANs are the token's
// (the device's SPIFFE ID), the key may only sign, and the certificate
// only authenticates a TLS client (RFC 5280 §4.2.1.3, §4.2.1.12; SPIFFE
// X509-SVID §4.3/§4.4: leaf SVIDs are not CAs, digitalSignature is set).
const deviceTemplate = `{
	"subject": {"commonName": {{ toJson .Subject.CommonName }}},
	"sans": {{ toJson .SANs }},
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["clientAuth"],
	"basicConstraints": {"isCA": false, "maxPathLen": 0}
}`

// acmeTemplate shapes ACME certificates (household servers): the names
// the challenges proved, server authentication only, so that an ACME
// certificate never authenticates a client to the gateway.
const acmeTemplate = `{
	"subject": {{ toJson .Subject }},
	"sans": {{ toJson .SANs }},
{{- if typeIs "*rsa.PublicKey" .Insecure.CR.PublicKey }}
	"keyUsage": ["keyEncipherment", "digitalSignature"],
{{- else }}
	"keyUsage": ["digitalSignature"],
{{- end }}
	"extKeyUsage": ["serverAuth"]
}`

// openCADB opens the CA's own database: the one given in Options.CADB
// (left open by Shutdown), else smallstep's bbolt file in the data dir.
func (c *CA) openCADB() (*smalldb.DB, *smalldb.Config, error) {
	if c.cadb != nil {
		// NewAuthDB's smallstep DB does not close c.cadb on Shutdown.
		inner, err := pgnosql.NewAuthDB(c.cadb)
		if err != nil {
			return nil, nil, fmt.Errorf("ca: opening the CA database: %w", err)
		}
		return inner, nil, nil
	}
	cfg := &smalldb.Config{Type: "bbolt", DataSource: filepath.Join(c.dir, smallstepDBFile)}
	sdb, err := smalldb.New(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: opening the CA database: %w", err)
	}
	inner, ok := sdb.(*smalldb.DB)
	if !ok {
		sdb.Shutdown()
		return nil, nil, fmt.Errorf("ca: unexpected CA database type %T", sdb)
	}
	return inner, cfg, nil
}

// migrateCertIndex moves the certificate indexes a data dir written before
// they lived in hearth's store keeps in the CA database (table
// hearth_device_certs, same records, same keys) into the store's bucket
// ca.device_certs, then drops that table. An index already in the store
// wins (a crash after the copy and before the drop copies nothing twice).
// Dropping the table, rather than keeping a stale copy, means a downgraded
// hearth finds no certificate for any device and refuses them all (fails
// closed) instead of trusting certificates revoked since.
func (c *CA) migrateCertIndex(ctx context.Context) error {
	entries, err := c.sdb.DB.List(legacyCertsTable)
	if errors.Is(err, database.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ca: CA database: reading the old certificate index: %w", err)
	}
	if len(entries) > 0 {
		err = c.st.Update(ctx, func(tx store.Tx) error {
			b := tx.Bucket(deviceCertsBucket)
			for _, e := range entries {
				if b.Get(e.Key) == nil {
					if err := b.Put(e.Key, e.Value); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("ca: store: moving the certificate index: %w", err)
		}
		c.log.Info().Int("indexes", len(entries)).Msg("ca: moved the device certificate indexes into hearth's store")
	}
	if err := c.sdb.DB.DeleteTable(legacyCertsTable); err != nil && !errors.Is(err, database.ErrNotFound) {
		return fmt.Errorf("ca: CA database: dropping the old certificate index: %w", err)
	}
	return nil
}

func (c *CA) startAuthority() error {
	inner, dbCfg, err := c.openCADB()
	if err != nil {
		return err
	}
	c.sdb = &certDB{DB: inner, c: c}

	pub := c.jwk.Public()
	dur := func(d time.Duration) *provisioner.Duration { return &provisioner.Duration{Duration: d} }
	f := false
	jwkProv := &provisioner.JWK{
		Type: "JWK",
		Name: provisionerName,
		Key:  &pub,
		Claims: &provisioner.Claims{
			MinTLSDur:               dur(MinDeviceLifetime),
			MaxTLSDur:               dur(c.set.maxLifetime),
			DefaultTLSDur:           dur(c.set.lifetime),
			DisableRenewal:          &f,
			AllowRenewalAfterExpiry: &f,
		},
		Options: &provisioner.Options{X509: &provisioner.X509Options{Template: deviceTemplate}},
	}
	acmeProv := &provisioner.ACME{
		Type: "ACME",
		Name: acmeProvisioner,
		Claims: &provisioner.Claims{
			MinTLSDur:     dur(MinDeviceLifetime),
			MaxTLSDur:     dur(c.set.maxLifetime),
			DefaultTLSDur: dur(c.set.lifetime),
		},
		Options: &provisioner.Options{X509: &provisioner.X509Options{Template: acmeTemplate}},
	}
	// hearth's own names (the gateway's and the CA listener's) are never
	// issued to anyone else: devices pin hearth's root, so a certificate
	// for those names obtained over ACME (say after ARP spoofing on the LAN
	// during an http-01 challenge) would let its holder impersonate hearth.
	deny := &policy.X509NameOptions{}
	for _, h := range c.hosts {
		if ip := net.ParseIP(h); ip != nil {
			deny.IPRanges = append(deny.IPRanges, ip.String())
		} else {
			deny.DNSDomains = append(deny.DNSDomains, h)
		}
		deny.CommonNames = append(deny.CommonNames, h)
	}
	cfg := &authconfig.Config{
		Address:  c.set.listen,
		DNSNames: c.hosts,
		DB:       dbCfg, // not opened: WithDatabase below gives the authority its database
		AuthorityConfig: &authconfig.AuthConfig{
			Provisioners: provisioner.List{jwkProv, acmeProv},
			// hearth keeps used tokens in the CA database across restarts,
			// so a token minted before a restart stays valid until it
			// expires (smallstep's stop-gap iat check is not needed).
			DisableIssuedAtCheck: true,
			Backdate:             dur(time.Minute),
			Policy:               &policy.Options{X509: &policy.X509PolicyOptions{DeniedNames: deny}},
		},
	}
	a, err := authority.NewEmbedded(
		authority.WithConfig(cfg),
		authority.WithX509RootCerts(c.root),
		authority.WithX509Signer(c.inter, c.interKey),
		authority.WithDatabase(c.sdb),
		authority.WithX509Enforcers(deviceEnforcer{c}),
		authority.WithQuietInit(),
	)
	if err != nil {
		inner.Shutdown()
		return fmt.Errorf("ca: starting the authority: %w", err)
	}
	c.auth = a
	if c.acmeDB, err = acmeNoSQL.New(inner); err != nil {
		inner.Shutdown()
		return fmt.Errorf("ca: ACME database: %w", err)
	}
	return nil
}

// ServerCertificate returns the gateway's TLS certificate (leaf and
// intermediate), for the gateway and the CA listener.
// It is the one being served now; [CA.GetCertificate] replaces it when
// it is due.
func (c *CA) ServerCertificate() *tls.Certificate { return c.serverCert.Load() }

// Roots returns a pool holding hearth's root only: client certificates are
// verified against it, never against the system roots.
func (c *CA) Roots() *x509.CertPool { return c.roots.Clone() }

// Fingerprint returns the hex SHA-256 of the root certificate's DER.
func (c *CA) Fingerprint() string { return c.fingerprint }

// RootPEM returns the root certificate in PEM.
func (c *CA) RootPEM() []byte { return append([]byte(nil), c.rootPEM...) }

// APITLSConfig is the TLS configuration of the CA listener. It allows TLS
// 1.2 (AEAD ECDHE suites only, as smallstep's own defaults do; RFC 9325
// §4.1/§4.2) besides 1.3, because ACME clients on household servers and
// older step CLIs still negotiate 1.2; the gateway itself is TLS 1.3 only.
// A client certificate is requested but optional, verified against
// hearth's CA only, because `step ca renew` authenticates with it.
func (c *CA) APITLSConfig() *tls.Config {
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(c.root)
	clientCAs.AddCert(c.inter) // clients that send only their leaf
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.GetCertificate,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  clientCAs,
		NextProtos: []string{"h2", "http/1.1"},
	}
}

// Close stops the authority and closes the CA database (unless the caller
// gave it in Options.CADB). The store belongs to the caller.
func (c *CA) Close() error {
	var err error
	if c.auth != nil {
		err = c.auth.Shutdown()
	}
	if c.devices != nil {
		c.devices.close()
	}
	return err
}

// baseContext carries what smallstep's handlers look up in the request
// context: the authority, its database and the ACME database and linker.
func (c *CA) baseContext(ctx context.Context) context.Context {
	ctx = authority.NewContext(ctx, c.auth)
	ctx = smalldb.NewContext(ctx, c.sdb)
	linker := acme.NewLinker(c.hosts[0]+portSuffix(c.set.listen), "acme")
	return acme.NewContext(ctx, c.acmeDB, acme.NewClient(), linker, nil)
}

func portSuffix(listen string) string {
	_, p, err := net.SplitHostPort(listen)
	if err != nil || p == "" || p == "443" {
		return ""
	}
	return ":" + p
}

// SetPolicy makes p the policy new device grants are expanded with (a
// configuration reload); p must not be nil. Devices keep the capabilities
// they were granted.
func (c *CA) SetPolicy(p *authz.Policy) { c.policy.Store(p) }
