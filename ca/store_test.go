package ca

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-home/hearth/internal/bolttest"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// signAsOldCode signs a device certificate for name with the data dir's
// intermediate, as the CA did before its records moved to the store.
func signAsOldCode(t *testing.T, dir, name string, now time.Time) *x509.Certificate {
	t.Helper()
	read := func(f string) *pem.Block {
		b, err := os.ReadFile(filepath.Join(dir, dirName, f))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		return blk
	}
	inter, err := x509.ParseCertificate(read(interCertFile).Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(read(interKeyFile).Bytes)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	id, _ := url.Parse("spiffe://" + DefaultTrustDomain + "/device/" + name)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name}, URIs: []*url.URL{id},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, inter, newKey(t).Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	crt, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return crt
}

// TestOldDataDirKeepsWorking opens a data dir whose records were written
// by the CA before the store seam (raw bbolt records, byte for byte what
// that code stored: device records and phone links in hearth.db, the
// certificate index in the CA database's table hearth_device_certs): its
// enrolled device is accepted, its phone link opens, the index moves into
// the store unchanged and the old table goes, and a revocation afterwards
// holds across a restart.
func TestOldDataDirKeepsWorking(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{Name: "test", Hosts: []string{"hearth.test"}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	crt := signAsOldCode(t, dir, "pi", now)
	sum := sha256.Sum256(crt.Raw)
	ts := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	piRec := `{"name":"pi","granted":["status"],"caps":["status"],"lifetime":86400000000000,"created_at":"` + ts(-time.Hour) + `","incarnation":"0123456789abcdef0123456789abcdef"}`
	phRec := `{"name":"ph","granted":["system:read"],"caps":["system:read"],"lifetime":86400000000000,"created_at":"` + ts(-time.Minute) + `","incarnation":"fedcba9876543210fedcba9876543210","token_id":"aaaabbbbccccddddeeeeffff00001111","token_expires":"` + ts(5*time.Minute) + `"}`
	piIdx := `{"enrolled_at":"` + ts(-time.Hour) + `","certs":[{"serial":"` + crt.SerialNumber.String() + `","sha256":"` + hex.EncodeToString(sum[:]) + `","not_after":"` + crt.NotAfter.Format(time.RFC3339) + `"}]}`
	raw := make([]byte, phoneSecretLen)
	rand.Read(raw)
	secret := strings.ToLower(linkEncoding.EncodeToString(raw))
	linkKey := sha256.Sum256(raw)
	link := `{"device":"ph","token_id":"aaaabbbbccccddddeeeeffff00001111","expires_at":"` + ts(5*time.Minute) + `"}`

	hearthDB := filepath.Join(dir, "hearth.db")
	bolttest.Write(t, hearthDB, map[string]map[string]string{
		"ca.devices":     {"pi": piRec, "ph": phRec},
		"ca.phone_links": {string(linkKey[:]): link},
	})
	bolttest.Write(t, filepath.Join(dir, DatabaseName), map[string]map[string]string{
		"hearth_device_certs": {"0123456789abcdef0123456789abcdef": piIdx},
		"x509_certs":          {crt.SerialNumber.String(): string(crt.Raw)},
	})

	open := func() (*CA, *bbolt.DB) {
		t.Helper()
		db, err := bbolt.Open(hearthDB, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		pol, _ := authz.New(authz.Config{})
		c, err := Open(dir, Config{}, Options{Store: boltstore.New(db), Policy: pol})
		if err != nil {
			db.Close()
			t.Fatal(err)
		}
		return c, db
	}
	ctx := context.Background()
	c, db := open()
	if name, caps, err := c.LookupDevice(ctx, crt); err != nil || name != "pi" || fmt.Sprint(caps) != "[status]" {
		t.Errorf("LookupDevice(old certificate) = %q %v %v, want pi [status]", name, caps, err)
	}
	ds, err := c.ListDevices(ctx)
	if err != nil || len(ds) != 2 || !ds[1].Enrolled || ds[1].Serial != crt.SerialNumber.String() || ds[0].Enrolled {
		t.Errorf("ListDevices = %+v %v", ds, err)
	}
	if info, err := c.PhoneLinkInfo(ctx, secret); err != nil || info.Device != "ph" {
		t.Errorf("PhoneLinkInfo(old link) = %+v %v", info, err)
	}
	// The index moved into the store, byte for byte.
	var moved []byte
	db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket([]byte(deviceCertsBucket)); b != nil {
			moved = append(moved, b.Get([]byte("0123456789abcdef0123456789abcdef"))...)
		}
		return nil
	})
	if string(moved) != piIdx {
		t.Errorf("ca.device_certs holds %q, want the old index %q", moved, piIdx)
	}
	if _, err := c.RevokeDevice(ctx, "pi"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	db.Close()

	// The old table is gone from the CA database.
	cadb, err := bbolt.Open(filepath.Join(dir, DatabaseName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	cadb.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(legacyCertsTable) != nil {
			t.Error("the CA database still has hearth_device_certs after the move")
		}
		return nil
	})
	cadb.Close()

	// After a restart: the revocation holds, the link still opens.
	c, db = open()
	defer db.Close()
	defer c.Close()
	if _, _, err := c.LookupDevice(ctx, crt); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("LookupDevice after revoke and restart = %v, want ErrUnknownDevice", err)
	}
	if cl, err := c.ClaimPhoneLink(ctx, secret); err != nil || cl.Device != "ph" {
		t.Errorf("ClaimPhoneLink(old link) = %+v %v", cl, err)
	}
}

// A claim whose audit entry cannot be written is refused (503) and spends
// nothing: the entry is written in the claim's transaction, before its
// commit, so the link is consumed only together with its record.
func TestPhoneClaimNotSpentWhenUnaudited(t *testing.T) {
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	l, err := tc.AddPhoneLink(ctx, "bobs-phone", []string{"system:read"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	tc.audit.setFail(true)
	if _, err := tc.ClaimPhoneLink(ctx, l.Secret); !errors.Is(err, ErrAuditUnavailable) {
		t.Fatalf("ClaimPhoneLink with the audit log down = %v, want ErrAuditUnavailable", err)
	}
	tc.audit.setFail(false)
	if cl, err := tc.ClaimPhoneLink(ctx, l.Secret); err != nil || cl.Device != "bobs-phone" {
		t.Fatalf("ClaimPhoneLink after the audit log is back = %+v %v", cl, err)
	}
	if _, err := tc.ClaimPhoneLink(ctx, l.Secret); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("second claim = %v, want ErrLinkInvalid", err)
	}
}
