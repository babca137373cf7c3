package ca

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Config is the CA part of hearth.yaml.
type Config struct {
	// Listen is the address of the smallstep-compatible CA API. Default ":9443".
	Listen string `yaml:"listen,omitempty"`
	// TrustDomain names device identities spiffe://<trust-domain>/device/<name>.
	// Default "hearth.home.arpa".
	TrustDomain string `yaml:"trust_domain,omitempty"`
	// DeviceLifetime is the default lifetime of a device certificate. Default "720h".
	DeviceLifetime string `yaml:"device_lifetime,omitempty"`
	// MaxDeviceLifetime caps any per-device lifetime. Default "2160h".
	MaxDeviceLifetime string `yaml:"max_device_lifetime,omitempty"`
	// EnrollTokenTTL is the default validity of an enrollment token. Default "15m".
	EnrollTokenTTL string `yaml:"enroll_token_ttl,omitempty"`
	// ACMEDomains are the DNS suffixes ACME certificates may name (at any
	// depth below them, e.g. nas.home.arpa for home.arpa); IP addresses
	// must be private. Default [DefaultACMEDomains]. A public suffix here
	// lets anyone who passes a challenge on the LAN mint certificates
	// that the household's browsers trust for it.
	ACMEDomains []string `yaml:"acme_domains,omitempty"`
}

// The defaults of [Config].
const (
	DefaultListen            = ":9443"
	DefaultTrustDomain       = "hearth.home.arpa"
	DefaultDeviceLifetime    = 720 * time.Hour
	DefaultMaxDeviceLifetime = 2160 * time.Hour
	DefaultEnrollTokenTTL    = 15 * time.Minute
	// MaxEnrollTokenTTL bounds an enrollment token's validity: a one-time
	// secret that is shown on a screen should not outlive the day (NIST SP
	// 800-63B-4 §3.1.2, short-lived out-of-band secrets).
	MaxEnrollTokenTTL = 24 * time.Hour
	// MinDeviceLifetime is the shortest device certificate hearth issues.
	MinDeviceLifetime = 5 * time.Minute
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("ca: invalid configuration")

// settings is a Config with its defaults applied and durations parsed.
type settings struct {
	listen         string
	trustDomain    string
	lifetime       time.Duration
	maxLifetime    time.Duration
	enrollTokenTTL time.Duration
	acmeDomains    []string
}

// Validate checks c without opening anything.
func (c Config) Validate() error {
	_, err := c.settings()
	return err
}

func (c Config) settings() (settings, error) {
	s := settings{
		listen:         c.Listen,
		trustDomain:    c.TrustDomain,
		lifetime:       DefaultDeviceLifetime,
		maxLifetime:    DefaultMaxDeviceLifetime,
		enrollTokenTTL: DefaultEnrollTokenTTL,
	}
	if s.listen == "" {
		s.listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(s.listen); err != nil {
		return s, fmt.Errorf("%w: ca.listen %q: %v", ErrConfig, s.listen, err)
	}
	if s.trustDomain == "" {
		s.trustDomain = DefaultTrustDomain
	}
	if !validTrustDomain(s.trustDomain) {
		return s, fmt.Errorf("%w: ca.trust_domain %q is not a lowercase DNS name", ErrConfig, s.trustDomain)
	}
	parse := func(field, v string, dst *time.Duration) error {
		if v == "" {
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%w: ca.%s %q is not a positive duration such as 720h", ErrConfig, field, v)
		}
		*dst = d
		return nil
	}
	s.acmeDomains = DefaultACMEDomains
	if len(c.ACMEDomains) > 0 {
		s.acmeDomains = nil
		for _, d := range c.ACMEDomains {
			d = strings.ToLower(strings.Trim(strings.TrimSpace(d), "."))
			if !validTrustDomain(d) {
				return s, fmt.Errorf("%w: ca.acme_domains: %q is not a DNS suffix such as home.arpa", ErrConfig, d)
			}
			s.acmeDomains = append(s.acmeDomains, d)
		}
	}
	if err := parse("device_lifetime", c.DeviceLifetime, &s.lifetime); err != nil {
		return s, err
	}
	if err := parse("max_device_lifetime", c.MaxDeviceLifetime, &s.maxLifetime); err != nil {
		return s, err
	}
	if err := parse("enroll_token_ttl", c.EnrollTokenTTL, &s.enrollTokenTTL); err != nil {
		return s, err
	}
	switch {
	case s.maxLifetime < MinDeviceLifetime:
		return s, fmt.Errorf("%w: ca.max_device_lifetime %s is shorter than %s", ErrConfig, s.maxLifetime, MinDeviceLifetime)
	case s.lifetime < MinDeviceLifetime || s.lifetime > s.maxLifetime:
		return s, fmt.Errorf("%w: ca.device_lifetime %s is not between %s and max_device_lifetime %s", ErrConfig, s.lifetime, MinDeviceLifetime, s.maxLifetime)
	case s.enrollTokenTTL > MaxEnrollTokenTTL:
		return s, fmt.Errorf("%w: ca.enroll_token_ttl %s is longer than %s", ErrConfig, s.enrollTokenTTL, MaxEnrollTokenTTL)
	}
	return s, nil
}

// validTrustDomain accepts a lowercase DNS name (SPIFFE ID spec §2.1: the
// trust domain is lowercase letters, digits, dots, dashes and underscores).
func validTrustDomain(s string) bool {
	if s == "" || len(s) > 255 || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ValidDeviceName reports whether name is a device name: a lowercase
// DNS-label-like string (RFC 1123 §2.1 label syntax), 1 to 63 characters,
// letters, digits and inner dashes. Device names become SPIFFE path
// segments and file names, so nothing else is allowed.
func ValidDeviceName(name string) bool {
	if name == "" || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
