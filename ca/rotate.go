package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.step.sm/crypto/x509util"
)

// RetiredDir holds, under <dir>/ca, the certificates of intermediates that
// [RotateIntermediate] replaced (never their keys).
const RetiredDir = "retired"

// RotateResult is what [RotateIntermediate] did.
type RotateResult struct {
	OldSerial, NewSerial string
	NewNotAfter          time.Time
	// Retired is the path the old intermediate's certificate was kept at.
	Retired string
}

// ErrRootKey means the root key is missing or is not the root's.
var ErrRootKey = errors.New("ca: the root key")

// RotateIntermediate replaces the intermediate CA under <dir>/ca with a new
// key and certificate signed by the same root, and reissues the gateway's
// server certificate under it. Run it with hearth stopped.
//
// Enrolled devices stay valid: their certificates chain to the root
// through the old intermediate, which they present with their leaf, and
// the gateway and the CA verify client chains against the root only (the
// chain a client sends supplies the intermediate). Clients pin the root's
// fingerprint, which does not change. The old intermediate's key is
// overwritten; its certificate is kept under ca/retired/ for the record.
//
// The root key is read from rootKey (default <dir>/ca/root_ca.key): it is
// needed only here and at init, so it can live offline in between.
func RotateIntermediate(dir, rootKey string, now func() time.Time) (*RotateResult, error) {
	if now == nil {
		now = time.Now
	}
	cdir := filepath.Join(dir, dirName)
	if rootKey == "" {
		rootKey = filepath.Join(cdir, rootKeyFile)
	}
	root, err := readCertFile(filepath.Join(cdir, rootCertFile))
	if err != nil {
		return nil, err
	}
	oldInter, err := readCertFile(filepath.Join(cdir, interCertFile))
	if err != nil {
		return nil, err
	}
	gw, err := readCertFile(filepath.Join(cdir, gatewayCertFile))
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(rootKey)
	if err != nil {
		return nil, fmt.Errorf("%w is not at %s (%v): pass --root-key with where you keep it offline", ErrRootKey, rootKey, err)
	}
	blk, _ := pem.Decode(kb)
	if blk == nil {
		return nil, fmt.Errorf("%w: %s is not PEM", ErrRootKey, rootKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	signer, ok := k.(crypto.Signer)
	if err != nil || !ok {
		return nil, fmt.Errorf("%w: %s is not a PKCS#8 signing key", ErrRootKey, rootKey)
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(root.PublicKey) {
		return nil, fmt.Errorf("%w: %s is not the key of this CA's root (%s)", ErrRootKey, rootKey, root.Subject.CommonName)
	}

	t := now().UTC().Truncate(time.Second)
	life := min(interLifetime, root.NotAfter.Sub(t))
	if life < 30*24*time.Hour {
		return nil, fmt.Errorf("ca: the root expires on %s: a new intermediate under it would not last; a new root means enrolling every device again", root.NotAfter.Format(time.DateOnly))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	inter, err := newCACert(oldInter.Subject.CommonName, x509util.DefaultIntermediateTemplate, key, root, signer, t, life)
	if err != nil {
		return nil, err
	}
	hosts := append([]string(nil), gw.DNSNames...)
	for _, ip := range gw.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	gwKey, gwChain, err := newServerCert(strings.TrimSuffix(gw.Subject.CommonName, " gateway"), hosts, inter, key, t)
	if err != nil {
		return nil, err
	}

	rdir := filepath.Join(cdir, RetiredDir)
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	retired := filepath.Join(rdir, fmt.Sprintf("intermediate-%s-%x.crt", t.Format("20060102T150405Z"), oldInter.SerialNumber))
	if err := replaceFile(retired, pemCerts(oldInter), 0o644); err != nil {
		return nil, err
	}
	// The key first: a crash after it leaves a key without its certificate,
	// which Open refuses (and a second run repairs), never a certificate
	// signed by a key that is gone.
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{interKeyFile, mustPEMKey(key), 0o600},
		{interCertFile, pemCerts(inter), 0o644},
		{gatewayKeyFile, mustPEMKey(gwKey), 0o600},
		{gatewayCertFile, pemCerts(gwChain...), 0o644},
	} {
		if err := replaceFile(filepath.Join(cdir, f.name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return &RotateResult{
		OldSerial: oldInter.SerialNumber.Text(16), NewSerial: inter.SerialNumber.Text(16),
		NewNotAfter: inter.NotAfter, Retired: retired,
	}, nil
}

func readCertFile(p string) (*x509.Certificate, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("ca: %w (run hearth init first)", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("ca: %s holds no certificate", p)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", p, err)
	}
	return c, nil
}
