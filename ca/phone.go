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
//  3. The page's button claims it with a POST: ClaimPhoneLink reads,
//     checks and deletes the link in one store transaction (single use,
//     also under concurrent claims on several replicas: a SERIALIZABLE
//     transaction on PostgreSQL) and returns what is needed to issue once.
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

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/store"
)

// DefaultPhoneLinkTTL is how long a phone enrollment link lives: iOS
// discards a downloaded configuration profile after about 8 minutes, so
// longer links would only outlive what they lead to.
const DefaultPhoneLinkTTL = 10 * time.Minute

// MaxPhoneLinkTTL bounds a link's lifetime.
const MaxPhoneLinkTTL = time.Hour

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
	rec, err := c.devices.get(ctx, tok.Device)
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
	err = c.st.Update(ctx, func(tx store.Tx) error {
		bk := tx.Bucket(phoneLinksBucket)
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

// lookupLink reads the link of secret and the record of its device from
// one snapshot and checks that the link is live and still the device's
// current one.
func (c *CA) lookupLink(ctx context.Context, secret string) (*phoneLinkRecord, *deviceRecord, error) {
	key, ok := linkKey(secret)
	if !ok {
		return nil, nil, ErrLinkInvalid
	}
	var lr *phoneLinkRecord
	var rec *deviceRecord
	err := c.st.View(ctx, func(tx store.Tx) error {
		var err error
		lr, rec, err = c.txLink(tx, key)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	if lr == nil {
		return nil, nil, ErrLinkInvalid
	}
	return lr, rec, nil
}

// txLink reads the link stored under key and its device's record; it
// returns nil, nil when there is no link, or it has expired, or its
// device's current token is another one (replaced, used or revoked).
func (c *CA) txLink(tx store.Tx, key []byte) (*phoneLinkRecord, *deviceRecord, error) {
	v := tx.Bucket(phoneLinksBucket).Get(key)
	if v == nil {
		return nil, nil, nil
	}
	var lr phoneLinkRecord
	if err := json.Unmarshal(v, &lr); err != nil {
		return nil, nil, fmt.Errorf("ca: store: phone link: %w", err)
	}
	if !c.now().Before(lr.ExpiresAt) {
		return nil, nil, nil
	}
	rec, err := txRecord(tx, lr.Device)
	if err != nil {
		return nil, nil, err
	}
	if rec == nil || rec.Revoked || rec.TokenID == "" ||
		subtle.ConstantTimeCompare([]byte(rec.TokenID), []byte(lr.TokenID)) != 1 {
		return nil, nil, nil
	}
	return &lr, rec, nil
}

// PhoneLinkInfo reads a link without consuming it (for GET).
func (c *CA) PhoneLinkInfo(ctx context.Context, secret string) (*PhoneLinkInfo, error) {
	lr, rec, err := c.lookupLink(ctx, secret)
	if err != nil {
		return nil, err
	}
	return &PhoneLinkInfo{Device: lr.Device, Capabilities: rec.Granted, ExpiresAt: lr.ExpiresAt}, nil
}

// ClaimPhoneLink consumes a link: of any number of claims of one link, on
// any number of replicas, at most one succeeds. The read, the checks and
// the delete are one store transaction; the claim's audit entry (device.enroll,
// outcome success, "enrollment link claimed") is written in its
// BeforeCommit hook, so a link is consumed only if its claim is recorded
// (503 otherwise, and the link stays usable), and a commit that fails
// after the entry was written gets a correcting entry. A refused claim is
// audited as a failure without the secret.
func (c *CA) ClaimPhoneLink(ctx context.Context, secret string) (*PhoneClaim, error) {
	ev := audit.Event{Name: audit.EventDeviceEnroll, Principal: principalOf(ctx), Client: clientOf(ctx), Meta: map[string]string{"via": "phone link"}}
	var lr *phoneLinkRecord
	var auditErr error
	key, ok := linkKey(secret)
	var err error
	if ok {
		err = c.st.Update(ctx, func(tx store.Tx) error {
			l, _, err := c.txLink(tx, key)
			lr = l
			if err != nil {
				return err
			}
			// A link is spent by its first claim, live or not.
			if bk := tx.Bucket(phoneLinksBucket); bk.Get(key) != nil {
				if err := bk.Delete(key); err != nil {
					return err
				}
			}
			if l == nil {
				return nil
			}
			tx.BeforeCommit(func() error {
				e := ev
				e.Meta = map[string]string{"via": "phone link", "token_id": l.TokenID}
				e.Outcome, e.Reason, e.Resource = audit.OutcomeSuccess, "enrollment link claimed", "device:"+l.Device
				if err := c.audit.Record(ctx, e); err != nil {
					auditErr = err
					return err
				}
				return nil
			})
			return nil
		})
	}
	switch {
	case auditErr != nil:
		return nil, fmt.Errorf("%w: %v", ErrAuditUnavailable, auditErr)
	case errors.Is(err, store.ErrCommit):
		c.undone(ctx, audit.EventDeviceEnroll, "device:"+lr.Device, "enrollment link claimed", err)
		return nil, err
	case err != nil:
		return nil, err
	case lr == nil:
		ev.Outcome, ev.Reason = audit.OutcomeFailure, "enrollment link refused: unknown, used, expired or replaced"
		if rerr := c.audit.Record(ctx, ev); rerr != nil {
			return nil, fmt.Errorf("%w: %v", ErrAuditUnavailable, rerr)
		}
		return nil, ErrLinkInvalid
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
