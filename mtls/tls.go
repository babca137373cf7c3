package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"time"
)

// ServerTLSConfig is the gateway's TLS configuration:
//
//   - TLS 1.3 only (RFC 8446; NIST SP 800-52r2 §3.1 prefers 1.3, and every
//     client hearth enrolls speaks it);
//   - client certificates requested and, when given, verified against
//     clientCAs alone (hearth's CA roots, never the system roots), with a
//     chain, validity and the clientAuth extended key usage (RFC 5280
//     §4.2.1.12) — crypto/tls checks the chain and EKU, VerifyConnection
//     insists that the leaf names clientAuth explicitly and is within its
//     validity on every handshake, resumed ones included;
//   - a request without a certificate is still accepted at the TLS layer
//     (VerifyClientCertIfGiven), so that phones away from home and the login
//     page can use a bearer token;
//   - ALPN h2 and http/1.1.
//
// TLS session resumption stays on (it makes reconnects cheap), and it cannot
// skip the device check: the gateway looks the device up in the
// DeviceDirectory on every request, whether the connection is new, kept
// alive or resumed, so a revoked device is refused on its next request.
func ServerTLSConfig(cert *tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  clientCAs,
		NextProtos: []string{"h2", "http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyClientLeaf(cs, time.Now())
		},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	if clientCAs == nil {
		// No roots means no client certificate can verify; an empty pool
		// (rather than nil, which crypto/tls reads as "system roots" on
		// the client side) makes that explicit.
		cfg.ClientCAs = x509.NewCertPool()
	}
	return cfg
}

var (
	errNoClientAuthEKU = errors.New("mtls: client certificate lacks the clientAuth extended key usage")
	errCertExpired     = errors.New("mtls: client certificate is outside its validity period")
)

// verifyClientLeaf runs on every handshake, full or resumed (crypto/tls
// calls VerifyConnection on resumption too).
func verifyClientLeaf(cs tls.ConnectionState, now time.Time) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	leaf := cs.PeerCertificates[0]
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return errNoClientAuthEKU
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return errCertExpired
	}
	return nil
}
