package ca

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"time"

	"github.com/hearth-home/hearth/audit"
)

// gatewayRetry is how long after a failed renewal of the gateway
// certificate the next attempt waits (the old certificate is served
// meanwhile; it still has a third of its lifetime left).
const gatewayRetry = time.Minute

// GetCertificate is tls.Config.GetCertificate for the gateway and CA
// listeners. It serves the gateway's server certificate and, once two
// thirds of its lifetime have passed on the CA's clock, reissues it (same
// names, new key; written to the data dir as at start) and serves the new
// one from the next handshake on, so that a hearth that runs for years
// never needs a restart to renew it. Connections already open keep the
// certificate they were established with; TLS checks a certificate only
// at the handshake. A failed renewal is logged and retried a minute later,
// while the current certificate is served.
func (c *CA) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cur := c.serverCert.Load()
	now := c.now()
	if now.Before(NextRenewal(cur.Leaf.NotBefore, cur.Leaf.NotAfter)) {
		return cur, nil
	}
	return c.renewServerCert(now), nil
}

// renewServerCert renews the gateway certificate if it is still due once
// the lock is held (another handshake may have renewed it meanwhile).
func (c *CA) renewServerCert(now time.Time) *tls.Certificate {
	c.gwMu.Lock()
	defer c.gwMu.Unlock()
	cur := c.serverCert.Load()
	if now.Before(NextRenewal(cur.Leaf.NotBefore, cur.Leaf.NotAfter)) || now.Before(c.gwRetry) {
		return cur
	}
	key, ok := cur.PrivateKey.(crypto.Signer)
	if !ok {
		return cur
	}
	chain, nkey, err := c.renewGatewayIfDue([]*x509.Certificate{cur.Leaf}, key)
	if err != nil {
		c.gwRetry = now.Add(gatewayRetry)
		c.log.Error().Err(err).Time("not_after", cur.Leaf.NotAfter).Msg("ca: renewing the gateway certificate failed; serving the current one and retrying in a minute")
		return cur
	}
	next := tlsCertificate(chain, nkey)
	c.serverCert.Store(next)
	// The certificate is in use from now on, whether or not the log takes
	// the entry: refusing handshakes would not make it less issued.
	if err := c.audit.Record(context.Background(), audit.Event{
		Time: now.UTC(), Name: audit.EventCertRenew, Outcome: audit.OutcomeSuccess, Resource: "gateway",
		Reason: "the gateway's server certificate renewed itself at two thirds of its lifetime",
		Client: "local",
		Meta:   map[string]string{"serial": next.Leaf.SerialNumber.Text(16), "not_after": next.Leaf.NotAfter.UTC().Format(time.RFC3339)},
	}); err != nil {
		c.log.Error().Err(err).Msg("ca: recording the gateway certificate's renewal failed")
	}
	return next
}

// tlsCertificate is chain (leaf first) and its key as crypto/tls wants it.
func tlsCertificate(chain []*x509.Certificate, key crypto.Signer) *tls.Certificate {
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, crt := range chain {
		tc.Certificate = append(tc.Certificate, crt.Raw)
	}
	return tc
}
