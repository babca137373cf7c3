package ca

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/smallstep/nosql/database"
	"go.etcd.io/bbolt"

	smalldb "github.com/smallstep/certificates/db"

	"github.com/hearth-home/hearth/authz"
)

// devicesBucket holds one JSON deviceRecord per device name.
var devicesBucket = []byte("ca.devices")

// Errors callers branch on.
var (
	// ErrUnknownDevice is authz.ErrUnknownDevice: no such device, or it or
	// the certificate is revoked, or the certificate was never recorded.
	ErrUnknownDevice = authz.ErrUnknownDevice
	// ErrDeviceExists means AddDevice found an enrolled, unrevoked device
	// of that name; revoke it first.
	ErrDeviceExists = errors.New("ca: a device of that name is enrolled; revoke it first")
	// ErrBadRequest wraps every refusal of malformed input (bad name,
	// capability, lifetime, TTL).
	ErrBadRequest = errors.New("ca: bad request")
)

// deviceRecord is a device as hearth.db stores it: who it is and what it
// may do. Its certificates are indexed in the CA database (see certIndex).
type deviceRecord struct {
	Name      string             `json:"name"`
	Granted   []string           `json:"granted"` // as given to AddDevice
	Caps      []authz.Capability `json:"caps"`    // expanded when granted
	Lifetime  time.Duration      `json:"lifetime"`
	CreatedAt time.Time          `json:"created_at"`
	// Incarnation is random per AddDevice: the key of this incarnation's
	// certificate index, so that a device added again after a revocation
	// starts with no certificate.
	Incarnation string `json:"incarnation"`
	// TokenID is the jti of the enrollment token that may enroll this
	// device; a newer token replaces it. Single use itself is enforced by
	// smallstep's token store.
	TokenID      string    `json:"token_id,omitempty"`
	TokenExpires time.Time `json:"token_expires,omitzero"`
	Revoked      bool      `json:"revoked,omitempty"`
	RevokedAt    time.Time `json:"revoked_at,omitzero"`
}

// certIndex lists the certificates issued to one incarnation of a device.
// It lives in the CA database (table hearth_device_certs) and is written in
// the same transaction as smallstep's own row for the certificate, so a
// certificate is stored if and only if it is indexed, with one fsync.
type certIndex struct {
	EnrolledAt time.Time    `json:"enrolled_at,omitzero"`
	Certs      []certRecord `json:"certs,omitempty"`
}

// certRecord is one certificate issued to a device.
type certRecord struct {
	Serial   string    `json:"serial"` // decimal, as smallstep writes it
	SHA256   string    `json:"sha256"` // hex SHA-256 of the DER
	NotAfter time.Time `json:"not_after"`
	Revoked  bool      `json:"revoked,omitempty"`
}

// Device is a device as hearth reports it.
type Device struct {
	Name         string             `json:"name"`
	Capabilities []authz.Capability `json:"capabilities"`
	Granted      []string           `json:"granted"`
	Lifetime     string             `json:"lifetime"`
	CreatedAt    time.Time          `json:"created_at"`
	Enrolled     bool               `json:"enrolled"`
	EnrolledAt   *time.Time         `json:"enrolled_at,omitempty"`
	TokenExpires *time.Time         `json:"token_expires_at,omitempty"`
	CertExpires  *time.Time         `json:"cert_expires_at,omitempty"`
	Serial       string             `json:"serial,omitempty"`
	Revoked      bool               `json:"revoked"`
	RevokedAt    *time.Time         `json:"revoked_at,omitempty"`
	// Warnings flag a newest certificate that has expired, expires soon,
	// or that no renewing client refreshed (see [WarnNotRenewing]); set by
	// ListDevices on the CA's clock.
	Warnings []string `json:"warnings,omitempty"`
}

func publicDevice(r *deviceRecord, idx *certIndex) Device {
	d := Device{
		Name: r.Name, Capabilities: r.Caps, Granted: r.Granted,
		Lifetime: r.Lifetime.String(), CreatedAt: r.CreatedAt,
		Enrolled: !idx.EnrolledAt.IsZero(), Revoked: r.Revoked,
	}
	tp := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	d.EnrolledAt = tp(idx.EnrolledAt)
	d.RevokedAt = tp(r.RevokedAt)
	if !d.Enrolled && !r.Revoked {
		d.TokenExpires = tp(r.TokenExpires)
	}
	var latest *certRecord
	for i := range idx.Certs {
		if latest == nil || idx.Certs[i].NotAfter.After(latest.NotAfter) {
			latest = &idx.Certs[i]
		}
	}
	if latest != nil {
		d.CertExpires = tp(latest.NotAfter)
		d.Serial = latest.Serial
	}
	return d
}

// deviceView is what LookupDevice needs, cached per device.
type deviceView struct {
	caps    []authz.Capability
	revoked bool
	certs   map[[32]byte]viewCert // by SHA-256 of the DER
}

type viewCert struct {
	serial   *big.Int
	notAfter time.Time
	revoked  bool
}

// deviceStore keeps device records in hearth.db and their certificate
// indexes in the CA database, with an in-memory view for the per-request
// lookup. Every write goes through the store under its mutex and drops the
// cached view of that device; the databases stay the truth.
type deviceStore struct {
	db  *bbolt.DB
	sdb *smalldb.DB // set once the authority's database is open
	now func() time.Time

	mu    sync.RWMutex
	cache map[string]*deviceView
}

var devCertsTable = []byte("hearth_device_certs")

func newDeviceStore(db *bbolt.DB, now func() time.Time) (*deviceStore, error) {
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(devicesBucket)
		return err
	}); err != nil {
		return nil, fmt.Errorf("ca: store: %w", err)
	}
	return &deviceStore{db: db, now: now, cache: map[string]*deviceView{}}, nil
}

func (s *deviceStore) get(name string) (*deviceRecord, error) {
	var rec *deviceRecord
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		rec, err = getRecord(tx, name)
		return err
	})
	return rec, err
}

func getRecord(tx *bbolt.Tx, name string) (*deviceRecord, error) {
	b := tx.Bucket(devicesBucket)
	if b == nil {
		return nil, errors.New("ca: store: devices bucket missing")
	}
	v := b.Get([]byte(name))
	if v == nil {
		return nil, nil
	}
	var r deviceRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("ca: store: device %q: %w", name, err)
	}
	return &r, nil
}

// index reads the certificate index of a device incarnation.
func (s *deviceStore) index(incarnation string) (*certIndex, error) {
	idx := &certIndex{}
	if incarnation == "" {
		return idx, nil
	}
	b, err := s.sdb.Get(devCertsTable, []byte(incarnation))
	if errors.Is(err, database.ErrNotFound) {
		return idx, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: CA database: %w", err)
	}
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("ca: CA database: certificate index: %w", err)
	}
	return idx, nil
}

// update runs fn on the record of name (nil when absent) in one bbolt
// transaction and stores what fn returns (nothing when it returns nil).
func (s *deviceStore) update(name string, fn func(r *deviceRecord) (*deviceRecord, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cache, name)
	return s.db.Update(func(tx *bbolt.Tx) error {
		r, err := getRecord(tx, name)
		if err != nil {
			return err
		}
		nr, err := fn(r)
		if err != nil || nr == nil {
			return err
		}
		b, err := json.Marshal(nr)
		if err != nil {
			return err
		}
		return tx.Bucket(devicesBucket).Put([]byte(name), b)
	})
}

// updateIndex changes the certificate index of device name with fn, in
// one CA-database transaction together with extra (smallstep's own rows),
// under the store's mutex: the index is only written by this process, so
// the read-modify-write needs no compare-and-swap. (Replicas sharing a
// PostgreSQL CA database would need one.)
func (s *deviceStore) updateIndex(name string, fn func(r *deviceRecord, idx *certIndex) error, extra func(tx *database.Tx)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cache, name)
	r, err := s.get(name)
	if err != nil {
		return err
	}
	if r == nil {
		return fmt.Errorf("%w: %s", ErrUnknownDevice, name)
	}
	idx, err := s.index(r.Incarnation)
	if err != nil {
		return err
	}
	if err := fn(r, idx); err != nil {
		return err
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	tx := new(database.Tx)
	if extra != nil {
		extra(tx)
	}
	tx.Set(devCertsTable, []byte(r.Incarnation), b)
	if err := s.sdb.Update(tx); err != nil {
		return fmt.Errorf("ca: CA database: %w", err)
	}
	return nil
}

func (s *deviceStore) list() ([]*deviceRecord, error) {
	var out []*deviceRecord
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(devicesBucket).ForEach(func(k, v []byte) error {
			var r deviceRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("ca: store: device %q: %w", k, err)
			}
			out = append(out, &r)
			return nil
		})
	})
	return out, err
}

func (s *deviceStore) view(name string) (*deviceView, error) {
	s.mu.RLock()
	v := s.cache[name]
	s.mu.RUnlock()
	if v != nil {
		return v, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.cache[name]; v != nil {
		return v, nil
	}
	r, err := s.get(name)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, nil
	}
	idx, err := s.index(r.Incarnation)
	if err != nil {
		return nil, err
	}
	v = &deviceView{caps: r.Caps, revoked: r.Revoked, certs: make(map[[32]byte]viewCert, len(idx.Certs))}
	for _, c := range idx.Certs {
		var k [32]byte
		b, err := hex.DecodeString(c.SHA256)
		serial, ok := new(big.Int).SetString(c.Serial, 10)
		if err == nil && len(b) == len(k) && ok {
			copy(k[:], b)
			v.certs[k] = viewCert{serial: serial, notAfter: c.NotAfter, revoked: c.Revoked}
		}
	}
	s.cache[name] = v
	return v, nil
}

// certFingerprint is the hex SHA-256 of a certificate's DER.
func certFingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// spiffePrefix is "spiffe://<trust-domain>/device/".
func (c *CA) spiffePrefix() string { return "spiffe://" + c.set.trustDomain + "/device/" }

// DeviceID returns the SPIFFE ID of device name.
func (c *CA) DeviceID(name string) string { return c.spiffePrefix() + name }

// deviceNameOf returns the device name of a certificate that carries a
// SPIFFE device ID of this trust domain, "" if it carries none, or an error
// if it carries one together with anything else.
func (c *CA) deviceNameOf(crt *x509.Certificate) (string, error) {
	var name string
	for _, u := range crt.URIs {
		if !strings.EqualFold(u.Scheme, "spiffe") {
			continue
		}
		n, ok := c.parseDeviceURI(u)
		if !ok {
			return "", fmt.Errorf("ca: %q is not a device ID of trust domain %s", u.String(), c.set.trustDomain)
		}
		if name != "" {
			return "", errors.New("ca: more than one device ID")
		}
		name = n
	}
	if name == "" {
		return "", nil
	}
	if len(crt.URIs) != 1 || len(crt.DNSNames) != 0 || len(crt.IPAddresses) != 0 || len(crt.EmailAddresses) != 0 {
		return "", fmt.Errorf("ca: a device certificate names only %s", c.DeviceID(name))
	}
	return name, nil
}

// parseDeviceURI parses spiffe://<trust-domain>/device/<name> strictly
// (SPIFFE ID spec §2: no port, userinfo, query or fragment).
func (c *CA) parseDeviceURI(u *url.URL) (string, bool) {
	if u.Scheme != "spiffe" || u.Host != c.set.trustDomain || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || u.ForceQuery {
		return "", false
	}
	name, ok := strings.CutPrefix(u.Path, "/device/")
	if !ok || !ValidDeviceName(name) || u.RawPath != "" {
		return "", false
	}
	return name, true
}

// LookupDevice implements mtls.DeviceDirectory: it maps a client
// certificate (already verified against hearth's CA by the TLS layer) to
// its device and granted capabilities. It refuses, with ErrUnknownDevice, a
// certificate without a device ID, an unknown or revoked device, and a
// certificate this CA did not record for that device (by the SHA-256 of
// its DER, which covers the serial), revoked or expired. It reads an in-memory view, so it costs a
// hash of the certificate and two map lookups.
func (c *CA) LookupDevice(_ context.Context, crt *x509.Certificate) (string, []authz.Capability, error) {
	if crt == nil || crt.SerialNumber == nil {
		return "", nil, ErrUnknownDevice
	}
	name, err := c.deviceNameOf(crt)
	if err != nil || name == "" {
		return "", nil, ErrUnknownDevice
	}
	v, err := c.devices.view(name)
	if err != nil {
		return "", nil, fmt.Errorf("ca: looking up %s: %w", name, err)
	}
	if v == nil || v.revoked {
		return "", nil, ErrUnknownDevice
	}
	// The same DER means the same serial: a certificate counts only if this
	// CA recorded exactly these bytes for this device.
	rec, ok := v.certs[sha256.Sum256(crt.Raw)]
	if !ok || rec.revoked || rec.serial.Cmp(crt.SerialNumber) != 0 || !c.now().Before(rec.notAfter) {
		return "", nil, ErrUnknownDevice
	}
	return name, slices.Clone(v.caps), nil
}

// DeviceCapabilities returns the expanded capabilities of a device that
// exists and is not revoked.
func (c *CA) DeviceCapabilities(_ context.Context, name string) ([]authz.Capability, error) {
	v, err := c.devices.view(name)
	if err != nil {
		return nil, err
	}
	if v == nil || v.revoked {
		return nil, fmt.Errorf("%w: %s", ErrUnknownDevice, name)
	}
	return slices.Clone(v.caps), nil
}

// ListDevices returns every device, sorted by name.
func (c *CA) ListDevices(_ context.Context) ([]Device, error) {
	recs, err := c.devices.list()
	if err != nil {
		return nil, err
	}
	out := make([]Device, 0, len(recs))
	for _, r := range recs {
		idx, err := c.devices.index(r.Incarnation)
		if err != nil {
			return nil, err
		}
		d := publicDevice(r, idx)
		d.Warnings = warnings(d, r.Lifetime, c.now())
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// storeDeviceCert stores a freshly signed device certificate: smallstep's
// rows (extra) and the device's certificate index in one transaction of
// the CA database. It refuses (and so smallstep refuses to hand the
// certificate out) when the device is unknown or revoked.
func (c *CA) storeDeviceCert(name string, leaf *x509.Certificate, extra func(tx *database.Tx)) error {
	return c.storeDeviceCertFrom(name, leaf, nil, extra)
}

// storeDeviceCertFrom is storeDeviceCert for a renewal of old: it also
// refuses unless old is a certificate recorded for the device's current
// incarnation and not revoked there, the check LookupDevice makes, so
// that every renewal path (smallstep's /renew and /rekey on the CA
// listener too) renews only what the gateway would accept, whatever
// smallstep's own revocation table says.
func (c *CA) storeDeviceCertFrom(name string, leaf, old *x509.Certificate, extra func(tx *database.Tx)) error {
	now := c.now()
	return c.devices.updateIndex(name, func(r *deviceRecord, idx *certIndex) error {
		if r.Revoked {
			return fmt.Errorf("%w: %s", ErrUnknownDevice, name)
		}
		if old != nil {
			fp := certFingerprint(old)
			i := slices.IndexFunc(idx.Certs, func(cr certRecord) bool { return cr.SHA256 == fp })
			if i < 0 || idx.Certs[i].Revoked || idx.Certs[i].Serial != old.SerialNumber.String() {
				return fmt.Errorf("%w: %s: the certificate to renew (serial %s) is not a live certificate of this device", ErrUnknownDevice, name, old.SerialNumber)
			}
		}
		// Drop certificates that expired, so the index stays small.
		idx.Certs = slices.DeleteFunc(idx.Certs, func(cr certRecord) bool { return now.After(cr.NotAfter) })
		idx.Certs = append(idx.Certs, certRecord{
			Serial:   leaf.SerialNumber.String(),
			SHA256:   certFingerprint(leaf),
			NotAfter: leaf.NotAfter,
		})
		if idx.EnrolledAt.IsZero() {
			idx.EnrolledAt = now.UTC()
		}
		return nil
	}, extra)
}

// markSerialRevoked marks a certificate revoked in its device's index
// (after a failed audit entry, or a revocation through smallstep's API).
func (c *CA) markSerialRevoked(name, serial string) error {
	err := c.devices.updateIndex(name, func(_ *deviceRecord, idx *certIndex) error {
		for i := range idx.Certs {
			if idx.Certs[i].Serial == serial {
				idx.Certs[i].Revoked = true
			}
		}
		return nil
	}, nil)
	if errors.Is(err, ErrUnknownDevice) {
		return nil
	}
	return err
}
