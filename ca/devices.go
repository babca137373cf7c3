package ca

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/mtls"
)

// devicesBucket holds one JSON deviceRecord per device name.
var devicesBucket = []byte("ca.devices")

// Errors callers branch on.
var (
	// ErrUnknownDevice is mtls.ErrUnknownDevice: no such device, or it or
	// the certificate is revoked, or the certificate was never recorded.
	ErrUnknownDevice = mtls.ErrUnknownDevice
	// ErrDeviceExists means AddDevice found an enrolled, unrevoked device
	// of that name; revoke it first.
	ErrDeviceExists = errors.New("ca: a device of that name is enrolled; revoke it first")
	// ErrBadRequest wraps every refusal of malformed input (bad name,
	// capability, lifetime, TTL).
	ErrBadRequest = errors.New("ca: bad request")
)

// deviceRecord is a device as hearth.db stores it.
type deviceRecord struct {
	Name      string             `json:"name"`
	Granted   []string           `json:"granted"` // as given to AddDevice
	Caps      []authz.Capability `json:"caps"`    // expanded when granted
	Lifetime  time.Duration      `json:"lifetime"`
	CreatedAt time.Time          `json:"created_at"`
	// TokenID is the jti of the one enrollment token that may still enroll
	// this device; empty once it enrolled (or a new token replaced it).
	TokenID      string       `json:"token_id,omitempty"`
	TokenExpires time.Time    `json:"token_expires,omitzero"`
	EnrolledAt   time.Time    `json:"enrolled_at,omitzero"`
	Revoked      bool         `json:"revoked,omitempty"`
	RevokedAt    time.Time    `json:"revoked_at,omitzero"`
	Certs        []certRecord `json:"certs,omitempty"`
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
}

func (r *deviceRecord) public() Device {
	d := Device{
		Name: r.Name, Capabilities: r.Caps, Granted: r.Granted,
		Lifetime: r.Lifetime.String(), CreatedAt: r.CreatedAt,
		Enrolled: !r.EnrolledAt.IsZero(), Revoked: r.Revoked,
	}
	tp := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	d.EnrolledAt = tp(r.EnrolledAt)
	d.RevokedAt = tp(r.RevokedAt)
	if r.TokenID != "" {
		d.TokenExpires = tp(r.TokenExpires)
	}
	var latest *certRecord
	for i := range r.Certs {
		if latest == nil || r.Certs[i].NotAfter.After(latest.NotAfter) {
			latest = &r.Certs[i]
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
	certs   map[string]certRecord // by serial
}

// deviceStore keeps device records in hearth.db with an in-memory cache
// for the per-request lookup. Every write goes through update, which drops
// the cached entry in the same critical section; the store stays the truth.
type deviceStore struct {
	db  *bbolt.DB
	now func() time.Time

	mu    sync.RWMutex
	cache map[string]*deviceView
}

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

// update runs fn on the record of name (nil when absent) in one bbolt
// transaction and stores what fn returns (nothing when it returns nil).
func (s *deviceStore) update(name string, fn func(r *deviceRecord) (*deviceRecord, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cache, name)
	err := s.db.Update(func(tx *bbolt.Tx) error {
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
	delete(s.cache, name)
	return err
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
	v = &deviceView{caps: r.Caps, revoked: r.Revoked, certs: make(map[string]certRecord, len(r.Certs))}
	for _, c := range r.Certs {
		v.certs[c.Serial] = c
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
// certificate this CA did not record for that device (by serial and
// SHA-256), revoked or expired. It reads an in-memory view, so it costs a
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
	rec, ok := v.certs[crt.SerialNumber.String()]
	if !ok || rec.Revoked || !c.now().Before(rec.NotAfter) {
		return "", nil, ErrUnknownDevice
	}
	fp := certFingerprint(crt)
	if subtle.ConstantTimeCompare([]byte(fp), []byte(rec.SHA256)) != 1 {
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
		out = append(out, r.public())
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// recordIssued adds a freshly signed device certificate to its device's
// record. It refuses (and so smallstep refuses to hand the certificate
// out) when the device is unknown or revoked. Certificates without a
// device ID (ACME) pass through.
func (c *CA) recordIssued(leaf *x509.Certificate) error {
	name, err := c.deviceNameOf(leaf)
	if err != nil {
		return err
	}
	if name == "" {
		return nil
	}
	now := c.now()
	return c.devices.update(name, func(r *deviceRecord) (*deviceRecord, error) {
		if r == nil || r.Revoked {
			return nil, fmt.Errorf("%w: %s", ErrUnknownDevice, name)
		}
		// Drop certificates that expired, so the record stays small.
		r.Certs = slices.DeleteFunc(r.Certs, func(cr certRecord) bool { return now.After(cr.NotAfter) })
		r.Certs = append(r.Certs, certRecord{
			Serial:   leaf.SerialNumber.String(),
			SHA256:   certFingerprint(leaf),
			NotAfter: leaf.NotAfter,
		})
		if r.EnrolledAt.IsZero() {
			r.EnrolledAt = now
		}
		r.TokenID, r.TokenExpires = "", time.Time{}
		return r, nil
	})
}

// forgetSerial marks a certificate revoked in its device's record (after a
// failed audit entry, or a revocation through smallstep's API).
func (c *CA) markSerialRevoked(name, serial string) error {
	return c.devices.update(name, func(r *deviceRecord) (*deviceRecord, error) {
		if r == nil {
			return nil, nil
		}
		for i := range r.Certs {
			if r.Certs[i].Serial == serial {
				r.Certs[i].Revoked = true
			}
		}
		return r, nil
	})
}
