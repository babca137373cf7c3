package ca

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"strings"

	"errors"
	"fmt"
	"github.com/hearth-home/hearth/audit"
	"time"

	"github.com/smallstep/certificates/authority/provisioner"
	smalldb "github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql/database"
)

// certDB is smallstep's database with hearth's device index hooked into
// the writes that matter: every device certificate smallstep stores (from
// /1.0/sign, /renew, or hearth's own enrollment) is indexed under its
// device in the same transaction as smallstep's own rows, and refused if
// the device is unknown or revoked; a revocation through smallstep's API
// is mirrored into the index. Since smallstep stores a certificate before
// it answers, no device certificate is handed out without its record.
type certDB struct {
	*smalldb.DB
	c *CA
}

// The tables smallstep's DB writes for a certificate (db/db.go).
var (
	stepCertsTable     = []byte("x509_certs")
	stepCertsDataTable = []byte("x509_certs_data")
)

// StoreCertificateChain implements smallstep's chain storer.
func (d *certDB) StoreCertificateChain(p provisioner.Interface, chain ...*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("ca: empty certificate chain")
	}
	leaf := chain[0]
	name, err := d.c.deviceNameOf(leaf)
	if err != nil {
		return err
	}
	if name == "" {
		if err := d.c.auditOtherIssue(p, leaf); err != nil {
			d.c.dropIssued(leaf)
			return err
		}
		return d.DB.StoreCertificateChain(p, chain...)
	}
	data := &smalldb.CertificateData{}
	if p != nil {
		data.Provisioner = &smalldb.ProvisionerData{ID: p.GetID(), Name: p.GetName(), Type: p.GetType().String()}
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return d.c.storeDeviceCert(name, leaf, func(tx *database.Tx) {
		serial := []byte(leaf.SerialNumber.String())
		tx.Set(stepCertsTable, serial, leaf.Raw)
		tx.Set(stepCertsDataTable, serial, b)
	})
}

// StoreRenewedCertificate implements smallstep's renewed-chain storer.
func (d *certDB) StoreRenewedCertificate(old *x509.Certificate, chain ...*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("ca: empty certificate chain")
	}
	leaf := chain[0]
	name, err := d.c.deviceNameOf(leaf)
	if err != nil {
		return err
	}
	if name == "" {
		return d.DB.StoreRenewedCertificate(old, chain...)
	}
	var data []byte
	if cd, err := d.DB.GetCertificateData(old.SerialNumber.String()); err == nil {
		data, _ = json.Marshal(cd)
	}
	if oldName, err := d.c.deviceNameOf(old); err != nil || oldName != name {
		return fmt.Errorf("%w: %s: renewed from a certificate of another identity", ErrUnknownDevice, name)
	}
	return d.c.storeDeviceCertFrom(name, leaf, old, func(tx *database.Tx) {
		serial := []byte(leaf.SerialNumber.String())
		tx.Set(stepCertsTable, serial, leaf.Raw)
		if data != nil {
			tx.Set(stepCertsDataTable, serial, data)
		}
	})
}

// Revoke implements smallstep's AuthDB, mirroring the revocation into the
// device index so that the gateway refuses the certificate at once.
func (d *certDB) Revoke(rci *smalldb.RevokedCertificateInfo) error {
	if err := d.DB.Revoke(rci); err != nil {
		return err
	}
	crt, err := d.DB.GetCertificate(rci.Serial)
	if err != nil || crt == nil {
		return nil // not a certificate smallstep stored: nothing to mirror
	}
	if name, err := d.c.deviceNameOf(crt); err == nil && name != "" {
		return d.c.markSerialRevoked(name, rci.Serial)
	}
	return nil
}

// dropIssued revokes a certificate that was signed but will not be handed
// out (its audit entry or its storage failed): in smallstep's database, so
// that it cannot be renewed, and in the device record, so that the gateway
// refuses it.
func (c *CA) dropIssued(leaf *x509.Certificate) error {
	serial := leaf.SerialNumber.String()
	var errs []error
	if name, err := c.deviceNameOf(leaf); err == nil && name != "" {
		errs = append(errs, c.markSerialRevoked(name, serial))
	}
	if err := c.revokeInStep(serial, leaf.NotAfter, "not handed out (audit or store failure)"); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		c.log.Error().Err(err).Str("serial", serial).Msg("ca: could not revoke a certificate that was not handed out")
		return err
	}
	return nil
}

// deviceEnforcer runs last on every certificate the authority signs
// (hearth enrollment, /1.0/sign, ACME). For a device certificate it
// enforces the shape whatever the template or the request said: only the
// device's SPIFFE ID, clientAuth only, digitalSignature only, not a CA,
// and a lifetime of at most the device's. Any other certificate (ACME, for
// household servers) may name only household names ([CA.checkACMENames]).
type deviceEnforcer struct{ c *CA }

// Enforce implements provisioner.CertificateEnforcer.
func (e deviceEnforcer) Enforce(crt *x509.Certificate) error {
	name, err := e.c.deviceNameOf(crt)
	if err != nil {
		return err
	}
	if name == "" {
		// Not a device certificate: one for a household server, over ACME.
		return e.c.checkACMENames(crt)
	}
	rec, err := e.c.devices.get(context.Background(), name)
	if err != nil {
		return err
	}
	if rec == nil || rec.Revoked {
		return fmt.Errorf("%w: %s", ErrUnknownDevice, name)
	}
	crt.KeyUsage = x509.KeyUsageDigitalSignature
	crt.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	crt.UnknownExtKeyUsage = nil
	crt.BasicConstraintsValid = true
	crt.IsCA = false
	crt.MaxPathLen = 0
	crt.MaxPathLenZero = false
	life := rec.Lifetime
	if life <= 0 || life > e.c.set.maxLifetime {
		life = e.c.set.maxLifetime
	}
	// NotBefore is backdated by a minute; the lifetime counts from now.
	if limit := e.c.now().Add(life); crt.NotAfter.After(limit) {
		crt.NotAfter = limit
	}
	if !crt.NotAfter.After(crt.NotBefore.Add(time.Minute)) {
		return errors.New("ca: the requested validity ends before it starts")
	}
	return nil
}

// revokeInStep revokes a serial in smallstep's database (passive
// revocation: renewals and smallstep's own checks refuse it).
func (c *CA) revokeInStep(serial string, notAfter time.Time, reason string) error {
	err := c.sdb.DB.Revoke(&smalldb.RevokedCertificateInfo{
		Serial:     serial,
		ReasonCode: 0,
		Reason:     "hearth: " + reason,
		RevokedAt:  c.now().UTC(),
		ExpiresAt:  notAfter,
	})
	if err != nil && !errors.Is(err, smalldb.ErrAlreadyExists) {
		return err
	}
	return nil
}

// auditOtherIssue records the issue of a certificate that is not a device
// certificate (ACME, for household servers) here, where every issuance
// path meets, since no hearth handler sees it. Device certificates are
// recorded by the handlers, which know the client.
func (c *CA) auditOtherIssue(p provisioner.Interface, leaf *x509.Certificate) error {
	if name, err := c.deviceNameOf(leaf); err != nil || name != "" {
		return nil
	}
	prov := ""
	if p != nil {
		prov = p.GetName()
	}
	names := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	err := c.audit.Record(context.Background(), audit.Event{
		Name: audit.EventCertIssue, Outcome: audit.OutcomeSuccess,
		Resource: "names:" + strings.Join(names, ","), Reason: "certificate issued by provisioner " + prov,
		Meta: map[string]string{"serial": leaf.SerialNumber.String(), "provisioner": prov,
			"not_after": leaf.NotAfter.UTC().Format(time.RFC3339)},
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrAuditUnavailable, err)
	}
	return nil
}
