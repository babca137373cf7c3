package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// DefaultACMEDomains are the DNS suffixes ACME may issue for when
// ca.acme_domains is not set: the names a home network uses for itself
// and nobody else can own on the public internet (RFC 8375 home.arpa,
// RFC 6762 .local, ICANN's .internal, and the customary .lan).
var DefaultACMEDomains = []string{"home.arpa", "internal", "lan", "local"}

// acmeIPAllowed reports whether ACME may issue for ip: a private (RFC
// 1918, RFC 4193), shared (RFC 6598, as VPNs such as Tailscale use) or
// link-local address, never a public one.
func acmeIPAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsPrivate() || ip.IsLinkLocalUnicast() || netip.MustParsePrefix("100.64.0.0/10").Contains(ip)
}

// acmeNameAllowed reports whether the DNS name n lies under one of the
// suffixes (at any depth, never the bare suffix itself).
func acmeNameAllowed(n string, suffixes []string) bool {
	n = strings.ToLower(strings.TrimSuffix(n, "."))
	n = strings.TrimPrefix(n, "*.")
	for _, s := range suffixes {
		if strings.HasSuffix(n, "."+s) && len(n) > len(s)+1 {
			return true
		}
	}
	return false
}

// checkACMENames refuses a certificate that is not a device certificate
// (so one issued over ACME) unless every name in it is a household name:
// a DNS name under ca.acme_domains or a private address, no URI or e-mail.
// The household root is trusted by the household's browsers for the
// certificates of its servers; without this bound anyone on the network
// who can answer an http-01 or tls-alpn-01 challenge as the CA sees it
// (ARP or DNS spoofing on the LAN) would get a certificate for a public
// name such as a bank's, trusted by every one of those browsers. RFC 8555
// §7.4 lets a CA refuse identifiers by policy; CA/B Forum Baseline
// Requirements §4.2.2 forbid issuing for internal names from public CAs
// for the mirror-image reason.
func (c *CA) checkACMENames(crt *x509.Certificate) error {
	if len(crt.URIs) > 0 || len(crt.EmailAddresses) > 0 {
		return errors.New("ca: a server certificate names only DNS names and IP addresses")
	}
	for _, d := range crt.DNSNames {
		if !acmeNameAllowed(d, c.set.acmeDomains) {
			return fmt.Errorf("ca: %s is not a household name (allowed: names under %s; see ca.acme_domains)", d, strings.Join(c.set.acmeDomains, ", "))
		}
	}
	for _, ip := range crt.IPAddresses {
		a, ok := netip.AddrFromSlice(ip)
		if !ok || !acmeIPAllowed(a) {
			return fmt.Errorf("ca: %s is not a private address", ip)
		}
	}
	if cn := crt.Subject.CommonName; cn != "" {
		if a, err := netip.ParseAddr(cn); err == nil {
			if !acmeIPAllowed(a) {
				return fmt.Errorf("ca: common name %s is not a private address", cn)
			}
		} else if !acmeNameAllowed(cn, c.set.acmeDomains) {
			return fmt.Errorf("ca: common name %s is not a household name", cn)
		}
	}
	return nil
}
