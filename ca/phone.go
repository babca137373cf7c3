package ca

// Enrolling a phone from a web page. A phone cannot run `hearth enroll`, so
// hearth makes its key and certificate for it, in memory, and hands them
// over once as a password-protected PKCS#12 file (pkcs12.go). The steps:
//
//  1. An admin adds the device on the Devices page: AddPhoneLink records
//     the device (AddDevice, with its audited device.add entry) and a
//     one-time link secret, of which only the SHA-256 is stored, expiring
//     after DefaultPhoneLinkTTL.
//  2. The phone opens the link (a QR code). Opening it (GET) only reads:
//     PhoneLinkInfo. Link previewers and scanners fetch links, so a GET
//     never consumes anything.
//  3. The page's button claims it with a POST: ClaimPhoneLink deletes the
//     link in one store transaction (single use, also under concurrent
//     claims) and returns what is needed to issue once.
//  4. IssuePhoneCredential signs a fresh key for the device through the same
//     enrollment path as `hearth enroll` (a one-time token carrying the
//     device record's token id, which smallstep's token store consumes, so
//     one claim issues at most one certificate), with its device.enroll
//     audit entry. Neither key nor file nor password is stored.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base32"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
)

// DefaultPhoneLinkTTL is how long a phone enrollment link lives: iOS
// discards a downloaded configuration profile after about 8 minutes, so
// longer links would only outlive what they lead to.
const DefaultPhoneLinkTTL = 10 * time.Minute

// MaxPhoneLinkTTL bounds a link's lifetime.
const MaxPhoneLinkTTL = time.Hour

// phoneLinksBucket holds one phoneLinkRecord per SHA-256 of a link secret.
var phoneLinksBucket = []byte("ca.phone_links")

// ErrLinkInvalid means a phone enrollment link is unknown, already used,
// expired, or replaced by a newer one for the same device.
var ErrLinkInvalid = errors.New("ca: this enrollment link was already used, has expired or was replaced; ask for a new one")

// PhoneLink is a one-time phone enrollment link as AddPhoneLink returns it.
// Secret is shown once (as a URL and a QR code) and never stored.
type PhoneLink struct {
	Device    string
	Secret    string
	ExpiresAt time.Time
}

// PhoneLinkInfo is what the phone's page shows before claiming.
type PhoneLinkInfo struct {
	Device       string
	Capabilities []string
	ExpiresAt    time.Time
}

// PhoneClaim is a claimed link: enough to issue the device's credential
// once (IssuePhoneCredential). It holds no secret of the link.
type PhoneClaim struct {
	Device    string
	TokenID   string
	ExpiresAt time.Time
}

type phoneLinkRecord struct {
	Device    string    `json:"device"`
	TokenID   string    `json:"token_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// phoneSecretLen is the link secret's size: 160 bits, far past guessing
// (NIST SP 800-63B §3.1.2: at least 64 bits for a look-up secret).
const phoneSecretLen = 20

var linkEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

func linkKey(secret string) ([]byte, bool) {
	s := strings.ToUpper(strings.TrimSpace(secret))
	b, err := linkEncoding.DecodeString(s)
	if err != nil || len(b) != phoneSecretLen || linkEncoding.EncodeToString(b) != s {
		return nil, false
	}
	sum := sha256.Sum256(b)
	return sum[:], true
}

// AddPhoneLink adds a device as AddDevice does (same checks and audit
// entry) and makes a one-time enrollment link for it, valid for ttl (0:
// DefaultPhoneLinkTTL). Only the SHA-256 of the link's secret is stored.
func (c *CA) AddPhoneLink(ctx context.Context, name string, caps []string, ttl, lifetime time.Duration) (*PhoneLink, error) {
	if ttl == 0 {
		ttl = DefaultPhoneLinkTTL
	}
	if ttl < time.Minute || ttl > MaxPhoneLinkTTL {
		return nil, fmt.Errorf("%w: link lifetime %s is not between 1m and %s", ErrBadRequest, ttl, MaxPhoneLinkTTL)
	}
	tok, err := c.AddDevice(ctx, name, caps, ttl, lifetime)
	if err != nil {
		return nil, err
	}
	rec, err := c.devices.get(tok.Device)
	if err != nil || rec == nil {
		return nil, fmt.Errorf("ca: store: reading the device just added: %v", err)
	}
	raw := make([]byte, phoneSecretLen)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	secret := strings.ToLower(linkEncoding.EncodeToString(raw))
	key, _ := linkKey(secret)
	now := c.now()
	lr := phoneLinkRecord{Device: tok.Device, TokenID: rec.TokenID, ExpiresAt: tok.ExpiresAt}
	b, err := json.Marshal(lr)
	if err != nil {
		return nil, err
	}
	err = c.db.Update(func(tx *bbolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(phoneLinksBucket)
		if err != nil {
			return err
		}
		// Drop expired links and older links of this device, so the bucket
		// stays small and one device has one live link.
		var drop [][]byte
		_ = bk.ForEach(func(k, v []byte) error {
			var o phoneLinkRecord
			if json.Unmarshal(v, &o) != nil || o.Device == lr.Device || now.After(o.ExpiresAt) {
				drop = append(drop, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range drop {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		return bk.Put(key, b)
	})
	if err != nil {
		return nil, fmt.Errorf("ca: store: %w", err)
	}
	return &PhoneLink{Device: tok.Device, Secret: secret, ExpiresAt: tok.ExpiresAt}, nil
}

// PhoneLinkURL is the page a link's QR code opens on the phone.
func (c *CA) PhoneLinkURL(secret string) string {
	return c.publicURL + "/.hearth/ui/enroll/" + url.PathEscape(secret)
}

// lookupLink reads (and, when consume, deletes) the link of secret and
// checks that it is live and still the device's current one.
func (c *CA) lookupLink(secret string, consume bool) (*phoneLinkRecord, *deviceRecord, error) {
	key, ok := linkKey(secret)
	if !ok {
		return nil, nil, ErrLinkInvalid
	}
	var lr *phoneLinkRecord
	fn := func(tx *bbolt.Tx) error {
		bk := tx.Bucket(phoneLinksBucket)
		if bk == nil {
			return nil
		}
		v := bk.Get(key)
		if v == nil {
			return nil
		}
		var r phoneLinkRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("ca: store: phone link: %w", err)
		}
		lr = &r
		if consume {
			return bk.Delete(key)
		}
		return nil
	}
	var err error
	if consume {
		err = c.db.Update(fn)
	} else {
		err = c.db.View(fn)
	}
	if err != nil {
		return nil, nil, err
	}
	if lr == nil || !c.now().Before(lr.ExpiresAt) {
		return nil, nil, ErrLinkInvalid
	}
	rec, err := c.devices.get(lr.Device)
	if err != nil {
		return nil, nil, err
	}
	if rec == nil || rec.Revoked || rec.TokenID == "" ||
		subtle.ConstantTimeCompare([]byte(rec.TokenID), []byte(lr.TokenID)) != 1 {
		return nil, nil, ErrLinkInvalid
	}
	return lr, rec, nil
}

// PhoneLinkInfo reads a link without consuming it (for GET).
func (c *CA) PhoneLinkInfo(_ context.Context, secret string) (*PhoneLinkInfo, error) {
	lr, rec, err := c.lookupLink(secret, false)
	if err != nil {
		return nil, err
	}
	return &PhoneLinkInfo{Device: lr.Device, Capabilities: rec.Granted, ExpiresAt: lr.ExpiresAt}, nil
}

// ClaimPhoneLink consumes a link: of any number of claims of one link, at
// most one succeeds. The claim is audited (device.enroll, outcome
// success, "enrollment link claimed"); a refused claim is audited as a
// failure without the secret.
func (c *CA) ClaimPhoneLink(ctx context.Context, secret string) (*PhoneClaim, error) {
	lr, _, err := c.lookupLink(secret, true)
	ev := audit.Event{Name: audit.EventDeviceEnroll, Principal: principalOf(ctx), Client: clientOf(ctx), Meta: map[string]string{"via": "phone link"}}
	if err != nil {
		if !errors.Is(err, ErrLinkInvalid) {
			return nil, err
		}
		ev.Outcome, ev.Reason = audit.OutcomeFailure, "enrollment link refused: unknown, used, expired or replaced"
		if rerr := c.audit.Record(ctx, ev); rerr != nil {
			return nil, fmt.Errorf("%w: %v", ErrAuditUnavailable, rerr)
		}
		return nil, err
	}
	ev.Outcome, ev.Reason, ev.Resource = audit.OutcomeSuccess, "enrollment link claimed", "device:"+lr.Device
	ev.Meta["token_id"] = lr.TokenID
	if err := c.audit.Record(ctx, ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAuditUnavailable, err)
	}
	return &PhoneClaim{Device: lr.Device, TokenID: lr.TokenID, ExpiresAt: lr.ExpiresAt}, nil
}

// PhoneCredential is a key made in memory and its certificate chain
// (leaf, then intermediate), handed over once.
type PhoneCredential struct {
	Key   *ecdsa.PrivateKey
	Chain []*x509.Certificate
	Root  *x509.Certificate
}

// IssuePhoneCredential makes a P-256 key in memory and enrolls it for the
// claimed device through the ordinary enrollment path (token checks, CSR
// checks, store, device.enroll audit entry). It succeeds once per claim:
// the token id is consumed by the CA's token store.
func (c *CA) IssuePhoneCredential(ctx context.Context, cl PhoneClaim) (*PhoneCredential, error) {
	now := c.now()
	if !now.Before(cl.ExpiresAt) {
		return nil, ErrLinkInvalid
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	id, err := url.Parse(c.DeviceID(cl.Device))
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, key)
	if err != nil {
		return nil, fmt.Errorf("ca: making the certificate request: %w", err)
	}
	tok, err := c.mintTokenAud(cl.Device, cl.TokenID, now, 5*time.Minute, c.caURL+"/1.0/sign")
	if err != nil {
		return nil, err
	}
	ev := audit.Event{Name: audit.EventDeviceEnroll}
	resp, he := c.enroll(ctx, &EnrollRequest{Token: tok, CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}, clientOf(ctx), &ev)
	if he != nil {
		if he.status == http.StatusServiceUnavailable {
			return nil, fmt.Errorf("%w: %v", ErrAuditUnavailable, he.cause)
		}
		ev.Outcome, ev.Reason, ev.Client = audit.OutcomeFailure, he.msg, clientOf(ctx)
		if ev.Meta == nil {
			ev.Meta = map[string]string{}
		}
		ev.Meta["via"] = "phone link"
		if err := c.audit.Record(ctx, ev); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrAuditUnavailable, err)
		}
		if he.status == http.StatusUnauthorized {
			return nil, ErrLinkInvalid
		}
		return nil, fmt.Errorf("ca: %s", he.msg)
	}
	chain, err := parsePEMChain(resp.Certificate + resp.Chain)
	if err != nil {
		return nil, err
	}
	return &PhoneCredential{Key: key, Chain: chain, Root: c.root}, nil
}

func parsePEMChain(s string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		crt, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: parsing the issued chain: %w", err)
		}
		out = append(out, crt)
	}
	if len(out) == 0 {
		return nil, errors.New("ca: the issued chain is empty")
	}
	return out, nil
}

// ClientCAs is the pool the gateway verifies client certificates against
// and names in its TLS CertificateRequest: the root and the intermediate
// that signs device certificates. iOS offers only client certificates
// whose direct issuer is among the names the server sends (RFC 8446
// §4.2.4 certificate_authorities) and does not walk up to the root.
func (c *CA) ClientCAs() *x509.CertPool {
	p := c.roots.Clone()
	p.AddCert(c.inter)
	return p
}

// WithClient returns ctx carrying the client's address, for the audit
// entries of calls made outside the CA's own handlers (the web pages).
func WithClient(ctx context.Context, addr string) context.Context { return withClient(ctx, addr) }
