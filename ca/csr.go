package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
)

// maxCSRLen bounds a PEM CSR (an RSA-8192 CSR is under 3 KiB).
const maxCSRLen = 16 << 10

// The extension requests a CSR may carry; the certificate's extensions
// come from hearth's template whatever the CSR asks, but a request for
// anything else (a CA, name constraints, …) is refused rather than
// silently ignored.
var (
	oidSAN              = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidCommonName       = asn1.ObjectIdentifier{2, 5, 4, 3}
)

// CSRError is a certificate request hearth refuses, with the reason.
type CSRError struct{ Reason string }

func (e *CSRError) Error() string { return "ca: certificate request refused: " + e.Reason }

// ParseCSR decodes exactly one PEM "CERTIFICATE REQUEST" block (RFC 7468
// §7) and checks its self-signature (RFC 2986 §3: proof of possession) and
// its key: ECDSA P-256 or P-384, RSA of 2048 to 8192 bits, or Ed25519
// (NIST SP 800-57 Part 1 Rev. 5 §5.6.1: at least 112-bit security; P-224
// and P-521 are refused too, as hearth's TLS stacks do not all take them).
func ParseCSR(pemCSR []byte) (*x509.CertificateRequest, error) {
	if len(pemCSR) == 0 {
		return nil, &CSRError{"the request has no csr"}
	}
	if len(pemCSR) > maxCSRLen {
		return nil, &CSRError{fmt.Sprintf("the csr is larger than %d bytes", maxCSRLen)}
	}
	blk, rest := pem.Decode(pemCSR)
	if blk == nil {
		return nil, &CSRError{"the csr is not PEM"}
	}
	if blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST" {
		return nil, &CSRError{fmt.Sprintf("the csr is a PEM %q block, want CERTIFICATE REQUEST", blk.Type)}
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, &CSRError{"the csr has data after the PEM block"}
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, &CSRError{"the csr cannot be parsed: " + err.Error()}
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, &CSRError{"the csr's signature does not verify"}
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidSAN), ext.Id.Equal(oidKeyUsage), ext.Id.Equal(oidExtKeyUsage):
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if rest, err := asn1.Unmarshal(ext.Value, &bc); err != nil || len(rest) != 0 || bc.IsCA {
				return nil, &CSRError{"the csr asks for a CA certificate"}
			}
		default:
			return nil, &CSRError{fmt.Sprintf("the csr asks for extension %s, which hearth does not grant", ext.Id)}
		}
	}
	return csr, nil
}

func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return &CSRError{fmt.Sprintf("ECDSA curve %s is not accepted; use P-256 or P-384", k.Curve.Params().Name)}
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return &CSRError{fmt.Sprintf("an RSA key of %d bits is not accepted; use 2048 to 8192 bits, or ECDSA P-256", n)}
		}
	case ed25519.PublicKey:
	default:
		return &CSRError{fmt.Sprintf("key type %T is not accepted; use ECDSA P-256", pub)}
	}
	return nil
}

// checkCSRNames refuses a CSR that asks for any name beyond device name's
// SPIFFE ID: the subject may be empty or CN=<name>; the SANs may be empty
// or exactly the SPIFFE ID. Extra names are refused, not dropped, so that
// the requester learns what it will not get.
func (c *CA) checkCSRNames(csr *x509.CertificateRequest, name string) error {
	var extra []string
	for _, d := range csr.DNSNames {
		extra = append(extra, "DNS:"+d)
	}
	for _, ip := range csr.IPAddresses {
		extra = append(extra, "IP:"+ip.String())
	}
	for _, e := range csr.EmailAddresses {
		extra = append(extra, "email:"+e)
	}
	id := c.DeviceID(name)
	for _, u := range csr.URIs {
		if u.String() != id {
			extra = append(extra, "URI:"+u.String())
		}
	}
	if len(csr.URIs) > 1 && len(extra) == 0 {
		extra = append(extra, "a repeated URI")
	}
	if len(extra) > 0 {
		return &CSRError{fmt.Sprintf("the csr asks for names beyond %s: %v", id, extra)}
	}
	s := csr.Subject
	if s.CommonName != "" && s.CommonName != name {
		return &CSRError{fmt.Sprintf("the csr's common name %q is not the device name %q", s.CommonName, name)}
	}
	for _, atv := range s.Names {
		if !atv.Type.Equal(oidCommonName) {
			return &CSRError{"the csr's subject may hold only CN=<device name>"}
		}
	}
	return nil
}

// errAs is errors.As returning the target.
func errAs[T error](err error) (T, bool) {
	var t T
	ok := errors.As(err, &t)
	return t, ok
}
