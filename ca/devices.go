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

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store"
)

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
	// device; a newer token replaces it, and enrolling with it clears it
	// (consumeEnrollToken: one store transaction, so across replicas too).
	// smallstep's own token store (used_ott) is the second lock.
	TokenID      string    `json:"token_id,omitempty"`
	TokenExpires time.Time `json:"token_expires,omitzero"`
	Revoked      bool      `json:"revoked,omitempty"`
	RevokedAt    time.Time `json:"revoked_at,omitzero"`
}

// certIndex lists the certificates issued to one incarnation of a device.
// It lives in hearth's store (bucket ca.device_certs, keyed by
// incarnation), next to the device record, so that a read-check-write of
// both is one store transaction (atomic across replicas on PostgreSQL)
// and every change reaches the other replicas' caches through the store's
// feed. It is written before smallstep's own rows for the certificate
// (see storeDeviceCertFrom for the order and what a crash in between
// leaves).
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
	caps        []authz.Capability
	revoked     bool
	incarnation string
	certs       map[[32]byte]viewCert // by SHA-256 of the DER
}

type viewCert struct {
	serial   *big.Int
	notAfter time.Time
	revoked  bool
}

// deviceStore keeps device records (bucket ca.devices) and their
// certificate indexes (bucket ca.device_certs) in hearth's store, with an
// in-memory view per device for the per-request lookup. The store is the
// truth; the view is a cache that is dropped:
//
//   - by this replica's own writes, once Update returns (a reload that
//     read the old record meanwhile is then not kept: see gen). No
//     BeforeCommit hook: without one, the store runs a transaction whose
//     COMMIT conflicted with another replica's again by itself, rather than
//     failing it (store.ErrCommit), so concurrent enrollments of different
//     devices do not answer 503;
//   - by the store's feed, for changes other replicas commit (a ca.devices
//     key drops that device, a ca.device_certs key the device of that
//     incarnation, a Resync everything);
//   - and it is not used at all while the feed is not fresh (no news from
//     it within its bound, 1 s): LookupDevice then reads the store, and
//     fails (503) if the store cannot be reached.
//
// So a revocation committed on one replica is refused by every other
// replica within the feed's bound.
type deviceStore struct {
	st  store.Store
	now func() time.Time

	mu    sync.RWMutex
	gen   uint64 // bumped by every invalidation; a reload keeps its view only if gen did not move
	cache map[string]*deviceView

	stop context.CancelFunc
	done chan struct{}
}

// The buckets of hearth's store the CA keeps its records in.
const (
	devicesBucket     = "ca.devices"      // name → deviceRecord (JSON)
	deviceCertsBucket = "ca.device_certs" // incarnation → certIndex (JSON)
	phoneLinksBucket  = "ca.phone_links"  // SHA-256 of a link secret → phoneLinkRecord (JSON)
)

// legacyCertsTable is where the certificate indexes lived before they
// moved into hearth's store (the CA database's table hearth_device_certs);
// Open moves what it finds there (migrateCertIndex).
var legacyCertsTable = []byte("hearth_device_certs")

func newDeviceStore(ctx context.Context, st store.Store, now func() time.Time) (*deviceStore, error) {
	if err := st.Declare(ctx, devicesBucket, deviceCertsBucket, phoneLinksBucket); err != nil {
		return nil, fmt.Errorf("ca: store: %w", err)
	}
	s := &deviceStore{st: st, now: now, cache: map[string]*deviceView{}, done: make(chan struct{})}
	sctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go func() {
		defer close(s.done)
		_ = st.Feed().Subscribe(sctx, s.onChanges)
	}()
	return s, nil
}

// close stops the feed subscription.
func (s *deviceStore) close() {
	s.stop()
	<-s.done
}

// onChanges drops the views that other replicas' commits made stale.
func (s *deviceStore) onChanges(cs []store.Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for _, ch := range cs {
		switch {
		case ch.Resync:
			clear(s.cache)
			return
		case ch.Bucket == devicesBucket:
			delete(s.cache, string(ch.Key))
		case ch.Bucket == deviceCertsBucket:
			for name, v := range s.cache {
				if v.incarnation == string(ch.Key) {
					delete(s.cache, name)
				}
			}
		}
	}
}

// invalidate drops the view of name.
func (s *deviceStore) invalidate(name string) {
	s.mu.Lock()
	s.gen++
	delete(s.cache, name)
	s.mu.Unlock()
}

func decodeRecord(name string, v []byte) (*deviceRecord, error) {
	if v == nil {
		return nil, nil
	}
	var r deviceRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("ca: store: device %q: %w", name, err)
	}
	return &r, nil
}

// txRecord reads the record of name (nil when absent).
func txRecord(tx store.Tx, name string) (*deviceRecord, error) {
	b := tx.Bucket(devicesBucket)
	if b == nil {
		return nil, errors.New("ca: store: devices bucket missing")
	}
	return decodeRecord(name, b.Get([]byte(name)))
}

// txIndex reads the certificate index of a device incarnation (empty when
// there is none).
func txIndex(tx store.Tx, incarnation string) (*certIndex, error) {
	idx := &certIndex{}
	if incarnation == "" {
		return idx, nil
	}
	b := tx.Bucket(deviceCertsBucket)
	if b == nil {
		return nil, errors.New("ca: store: device certificates bucket missing")
	}
	v := b.Get([]byte(incarnation))
	if v == nil {
		return idx, nil
	}
	if err := json.Unmarshal(v, idx); err != nil {
		return nil, fmt.Errorf("ca: store: certificate index: %w", err)
	}
	return idx, nil
}

func putJSON(tx store.Tx, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), b)
}

func (s *deviceStore) get(ctx context.Context, name string) (*deviceRecord, error) {
	r, _, err := s.load(ctx, name)
	return r, err
}

// load reads the record of name and the index of its incarnation from one
// snapshot (nil, nil when there is no such device).
func (s *deviceStore) load(ctx context.Context, name string) (r *deviceRecord, idx *certIndex, err error) {
	err = s.st.View(ctx, func(tx store.Tx) error {
		if r, err = txRecord(tx, name); err != nil || r == nil {
			return err
		}
		idx, err = txIndex(tx, r.Incarnation)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return r, idx, nil
}

// index reads the certificate index of a device incarnation.
func (s *deviceStore) index(ctx context.Context, incarnation string) (idx *certIndex, err error) {
	err = s.st.View(ctx, func(tx store.Tx) error {
		idx, err = txIndex(tx, incarnation)
		return err
	})
	return idx, err
}

// change runs fn on the record of name (nil when absent) and the index of
// its incarnation in one store transaction, and stores what fn returns: a
// record (nil: unchanged) and an index (nil: unchanged; stored under the
// incarnation of the record returned, else of the one read). fn may run
// more than once (store.Store.Update), each time on fresh copies; it must
// have no other effect. The device's view is dropped before the commit and
// again after it.
func (s *deviceStore) change(ctx context.Context, name string, fn func(r *deviceRecord, idx *certIndex) (*deviceRecord, *certIndex, error)) error {
	err := s.st.Update(ctx, func(tx store.Tx) error {
		r, err := txRecord(tx, name)
		if err != nil {
			return err
		}
		inc := ""
		if r != nil {
			inc = r.Incarnation
		}
		idx, err := txIndex(tx, inc)
		if err != nil {
			return err
		}
		nr, nidx, err := fn(r, idx)
		if err != nil {
			return err
		}
		if nr != nil {
			if err := putJSON(tx, devicesBucket, name, nr); err != nil {
				return err
			}
			inc = nr.Incarnation
		}
		if nidx != nil {
			if inc == "" {
				return fmt.Errorf("ca: store: device %q has no incarnation to index certificates under", name)
			}
			if err := putJSON(tx, deviceCertsBucket, inc, nidx); err != nil {
				return err
			}
		}
		return nil
	})
	s.invalidate(name)
	return err
}

// deviceEntry is a device record with its certificate index.
type deviceEntry struct {
	rec *deviceRecord
	idx *certIndex
}

// list reads every device and its index from one snapshot, in name order.
func (s *deviceStore) list(ctx context.Context) ([]deviceEntry, error) {
	var out []deviceEntry
	err := s.st.View(ctx, func(tx store.Tx) error {
		out = out[:0]
		return tx.Bucket(devicesBucket).ForEach(func(k, v []byte) error {
			r, err := decodeRecord(string(k), v)
			if err != nil {
				return err
			}
			idx, err := txIndex(tx, r.Incarnation)
			if err != nil {
				return err
			}
			out = append(out, deviceEntry{r, idx})
			return nil
		})
	})
	return out, err
}

// view returns what LookupDevice needs about name (nil when there is no
// such device): from the cache while the store's feed is fresh, else from
// the store.
func (s *deviceStore) view(ctx context.Context, name string) (*deviceView, error) {
	fresh := s.st.Feed().Fresh(time.Now())
	s.mu.RLock()
	v, gen := s.cache[name], s.gen
	s.mu.RUnlock()
	if v != nil && fresh {
		return v, nil
	}
	r, idx, err := s.load(ctx, name)
	if err != nil || r == nil {
		return nil, err
	}
	v = newView(r, idx)
	if fresh {
		s.mu.Lock()
		if s.gen == gen {
			s.cache[name] = v
		}
		s.mu.Unlock()
	}
	return v, nil
}

func newView(r *deviceRecord, idx *certIndex) *deviceView {
	v := &deviceView{caps: r.Caps, revoked: r.Revoked, incarnation: r.Incarnation, certs: make(map[[32]byte]viewCert, len(idx.Certs))}
	for _, c := range idx.Certs {
		var k [32]byte
		b, err := hex.DecodeString(c.SHA256)
		serial, ok := new(big.Int).SetString(c.Serial, 10)
		if err == nil && len(b) == len(k) && ok {
			copy(k[:], b)
			v.certs[k] = viewCert{serial: serial, notAfter: c.NotAfter, revoked: c.Revoked}
		}
	}
	return v
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
// its DER, which covers the serial), revoked or expired. It reads an
// in-memory view, so it costs a hash of the certificate and two map
// lookups, while the store's feed is fresh; otherwise it reads the store
// (and fails, not ErrUnknownDevice, when the store cannot be reached: the
// gateway answers 503).
func (c *CA) LookupDevice(ctx context.Context, crt *x509.Certificate) (string, []authz.Capability, error) {
	if crt == nil || crt.SerialNumber == nil {
		return "", nil, ErrUnknownDevice
	}
	name, err := c.deviceNameOf(crt)
	if err != nil || name == "" {
		return "", nil, ErrUnknownDevice
	}
	v, err := c.devices.view(ctx, name)
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
func (c *CA) DeviceCapabilities(ctx context.Context, name string) ([]authz.Capability, error) {
	v, err := c.devices.view(ctx, name)
	if err != nil {
		return nil, err
	}
	if v == nil || v.revoked {
		return nil, fmt.Errorf("%w: %s", ErrUnknownDevice, name)
	}
	return slices.Clone(v.caps), nil
}

// ListDevices returns every device, sorted by name.
func (c *CA) ListDevices(ctx context.Context) ([]Device, error) {
	recs, err := c.devices.list(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Device, 0, len(recs))
	for _, e := range recs {
		d := publicDevice(e.rec, e.idx)
		d.Warnings = warnings(d, e.rec.Lifetime, c.now())
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// storeDeviceCert stores a freshly signed device certificate: the
// device's certificate index in hearth's store, then smallstep's rows
// (extra) in the CA database. It refuses (and so smallstep refuses to hand
// the certificate out) when the device is unknown or revoked.
func (c *CA) storeDeviceCert(name string, leaf *x509.Certificate, extra func(tx *database.Tx)) error {
	return c.storeDeviceCertFrom(name, leaf, nil, extra)
}

// storeDeviceCertFrom is storeDeviceCert for a renewal of old: it also
// refuses unless old is a certificate recorded for the device's current
// incarnation and not revoked there, the check LookupDevice makes, so
// that every renewal path (smallstep's /renew and /rekey on the CA
// listener too) renews only what the gateway would accept, whatever
// smallstep's own revocation table says.
//
// The index and smallstep's rows are two databases, so two commits. The
// index goes first: its read-check-write (device known and unrevoked, old
// certificate live) is the decision, one store transaction, atomic across
// replicas. Smallstep hands a certificate out only after this returns, so
// if the process dies between the two commits, the index holds a
// certificate nobody received (and the gateway would only ever see it from
// whoever holds it: no one); if smallstep's write fails, the certificate is
// marked revoked in the index before the error is returned.
func (c *CA) storeDeviceCertFrom(name string, leaf, old *x509.Certificate, extra func(tx *database.Tx)) error {
	now := c.now()
	ctx := context.Background()
	err := c.devices.change(ctx, name, func(r *deviceRecord, idx *certIndex) (*deviceRecord, *certIndex, error) {
		if r == nil || r.Revoked {
			return nil, nil, fmt.Errorf("%w: %s", ErrUnknownDevice, name)
		}
		if old != nil {
			fp := certFingerprint(old)
			i := slices.IndexFunc(idx.Certs, func(cr certRecord) bool { return cr.SHA256 == fp })
			if i < 0 || idx.Certs[i].Revoked || idx.Certs[i].Serial != old.SerialNumber.String() {
				return nil, nil, fmt.Errorf("%w: %s: the certificate to renew (serial %s) is not a live certificate of this device", ErrUnknownDevice, name, old.SerialNumber)
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
		return nil, idx, nil
	})
	if err != nil || extra == nil {
		return err
	}
	tx := new(database.Tx)
	extra(tx)
	if err := c.sdb.DB.Update(tx); err != nil {
		if merr := c.markSerialRevoked(name, leaf.SerialNumber.String()); merr != nil {
			c.log.Error().Err(merr).Str("device", name).Str("serial", leaf.SerialNumber.String()).Msg("ca: could not mark a certificate smallstep did not store revoked")
		}
		return fmt.Errorf("ca: CA database: %w", err)
	}
	return nil
}

// markSerialRevoked marks a certificate revoked in its device's index
// (after a failed audit entry, or a revocation through smallstep's API).
func (c *CA) markSerialRevoked(name, serial string) error {
	err := c.devices.change(context.Background(), name, func(r *deviceRecord, idx *certIndex) (*deviceRecord, *certIndex, error) {
		if r == nil {
			return nil, nil, nil
		}
		hit := false
		for i := range idx.Certs {
			if idx.Certs[i].Serial == serial && !idx.Certs[i].Revoked {
				idx.Certs[i].Revoked, hit = true, true
			}
		}
		if !hit {
			return nil, nil, nil
		}
		return nil, idx, nil
	})
	return err
}
