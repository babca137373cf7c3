package oidc

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
)

// Provider is one OpenID Connect provider in hearth.yaml.
//
//	oidc:
//	  - name: dex
//	    issuer: https://dex.home.arpa:5556/dex
//	    client_id: hearth
//	    client_secret_file: /etc/hearth/dex-secret   # 0600
//	    scopes: [email]                              # openid is always sent
//	    signup:                                      # optional
//	      domains: [example.org]
//	      addresses: [grandma@example.net]
//	    device_flow: true                            # `hearth login --oidc dex`
type Provider struct {
	// Name is the provider's path segment: /.hearth/v1/auth/oidc/{name}/login.
	// Lower-case letters, digits and '-', at most 32 characters.
	Name string `yaml:"name"`
	// DisplayName is shown on the login page ("Sign in with …"); default Name.
	DisplayName string `yaml:"display_name,omitempty"`
	// Issuer must equal the discovered issuer exactly (OpenID Connect
	// Discovery 1.0 §4.3): no trailing-slash or case normalisation. https only.
	Issuer   string `yaml:"issuer"`
	ClientID string `yaml:"client_id"`
	// ClientSecret, or ClientSecretFile holding it (preferred; the file
	// should be mode 0600 — a wider mode is logged as a warning). Empty
	// both: a public client, which PKCE alone protects.
	ClientSecret     string `yaml:"client_secret,omitempty"`
	ClientSecretFile string `yaml:"client_secret_file,omitempty"`
	// Scopes requested besides "openid", which is always sent. Default
	// none; add "email" when SignUp is used.
	Scopes []string `yaml:"scopes,omitempty"`
	// Algorithms narrows the ID token signature algorithms accepted. Default
	// (and upper bound) the asymmetric set in [DefaultAlgorithms]; "none"
	// and the HS* family can never be configured (RFC 8725 §3.1, §3.2).
	Algorithms []string `yaml:"algorithms,omitempty"`
	// SignUp allows an identity that is not linked yet to link itself to an
	// EXISTING hearth user whose email address equals the ID token's
	// verified email, when that address or its domain is listed here. It
	// never creates a user. Empty: unlinked identities are refused.
	SignUp SignUp `yaml:"signup,omitempty"`
	// MFAACRValues lists `acr` values that this provider uses for a login
	// with a second factor. Independently, an `amr` claim (RFC 8176) holding
	// "mfa", or a knowledge factor together with a possession or inherence
	// factor, counts as MFA. Default none.
	MFAACRValues []string `yaml:"mfa_acr_values,omitempty"`
	// DeviceFlow enables `hearth login --oidc NAME` through the device
	// authorization grant (RFC 8628) and the …/{name}/token endpoint that
	// takes the ID token the device obtained. Default false.
	DeviceFlow bool `yaml:"device_flow,omitempty"`
	// DeviceClientID is the (public) client the device flow uses, and the
	// audience ID tokens posted to …/token must carry. Default ClientID.
	// A separate client is better: then an ID token from the browser flow
	// can never be replayed to …/token.
	DeviceClientID string `yaml:"device_client_id,omitempty"`
}

// SignUp lists who may link themselves by verified email. Addresses are
// compared case-insensitively; a domain matches the address's domain part
// exactly (no subdomains).
type SignUp struct {
	Domains   []string `yaml:"domains,omitempty"`
	Addresses []string `yaml:"addresses,omitempty"`
}

// Enabled reports whether sign-up by verified email is configured.
func (s SignUp) Enabled() bool { return len(s.Domains) > 0 || len(s.Addresses) > 0 }

// Allows reports whether email is listed, by address or domain.
func (s SignUp) Allows(email string) bool {
	at := strings.LastIndexByte(email, '@')
	if at <= 0 || at == len(email)-1 {
		return false
	}
	for _, a := range s.Addresses {
		if strings.EqualFold(a, email) {
			return true
		}
	}
	domain := email[at+1:]
	for _, d := range s.Domains {
		if strings.EqualFold(d, domain) {
			return true
		}
	}
	return false
}

// DefaultAlgorithms are the JWS algorithms accepted for ID tokens when a
// provider lists none, and the most any provider may list: asymmetric only.
// A symmetric (HS*) algorithm would let anyone holding the provider's
// public key — everyone — forge tokens (RFC 8725 §2.1, §3.1).
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// Validate checks p without touching the network or the secret file's
// contents.
func (p *Provider) Validate() error {
	if !nameRE.MatchString(p.Name) {
		return fmt.Errorf("oidc: provider name %q must be 1–32 lower-case letters, digits or '-'", p.Name)
	}
	u, err := url.Parse(p.Issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		// OpenID Connect Core §2: iss is an https URL without query or fragment.
		return fmt.Errorf("oidc: provider %s: issuer %q must be an https URL without query, fragment or user info", p.Name, p.Issuer)
	}
	if p.ClientID == "" {
		return fmt.Errorf("oidc: provider %s: client_id is required", p.Name)
	}
	if p.ClientSecret != "" && p.ClientSecretFile != "" {
		return fmt.Errorf("oidc: provider %s: set client_secret or client_secret_file, not both", p.Name)
	}
	for _, a := range p.Algorithms {
		if !slices.Contains(DefaultAlgorithms, a) {
			return fmt.Errorf("oidc: provider %s: algorithm %q is not allowed (allowed: %s)", p.Name, a, strings.Join(DefaultAlgorithms, ", "))
		}
	}
	for _, s := range p.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			return fmt.Errorf("oidc: provider %s: bad scope %q", p.Name, s)
		}
	}
	for _, a := range p.SignUp.Addresses {
		if addr, err := mail.ParseAddress(a); err != nil || addr.Address != a || addr.Name != "" {
			return fmt.Errorf("oidc: provider %s: signup address %q is not a plain email address", p.Name, a)
		}
	}
	for _, d := range p.SignUp.Domains {
		if d == "" || strings.ContainsAny(d, "@ *") || strings.HasPrefix(d, ".") {
			return fmt.Errorf("oidc: provider %s: signup domain %q must be a bare domain such as example.org (no wildcard)", p.Name, d)
		}
	}
	if p.DeviceClientID != "" && !p.DeviceFlow {
		return fmt.Errorf("oidc: provider %s: device_client_id is set but device_flow is false", p.Name)
	}
	return nil
}

// algorithms returns the effective allowlist.
func (p *Provider) algorithms() []string {
	if len(p.Algorithms) > 0 {
		return p.Algorithms
	}
	return DefaultAlgorithms
}

// deviceAudience is the audience required of ID tokens posted to …/token.
func (p *Provider) deviceAudience() string {
	if p.DeviceClientID != "" {
		return p.DeviceClientID
	}
	return p.ClientID
}

// ValidateProviders validates every provider and that names are unique.
func ValidateProviders(ps []Provider) error {
	seen := map[string]bool{}
	var errs []error
	for i := range ps {
		if err := ps[i].Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[ps[i].Name] {
			errs = append(errs, fmt.Errorf("oidc: provider name %q is used twice", ps[i].Name))
		}
		seen[ps[i].Name] = true
	}
	return errors.Join(errs...)
}

// secret returns the client secret, reading ClientSecretFile if set. A file
// readable by group or others is reported through warn (OWASP ASVS 4.0
// V6.4.1: secrets at rest are protected) but still used, so that a
// permission slip does not lock the household out.
func (p *Provider) secret(warn func(string)) (string, error) {
	if p.ClientSecretFile == "" {
		return p.ClientSecret, nil
	}
	fi, err := os.Stat(p.ClientSecretFile)
	if err != nil {
		return "", fmt.Errorf("oidc: provider %s: client_secret_file: %w", p.Name, err)
	}
	if fi.Mode().Perm()&0o077 != 0 && warn != nil {
		warn(fmt.Sprintf("oidc: provider %s: client_secret_file %s has mode %#o; it should be 0600", p.Name, p.ClientSecretFile, fi.Mode().Perm()))
	}
	b, err := os.ReadFile(p.ClientSecretFile)
	if err != nil {
		return "", fmt.Errorf("oidc: provider %s: client_secret_file: %w", p.Name, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("oidc: provider %s: client_secret_file %s is empty", p.Name, p.ClientSecretFile)
	}
	return s, nil
}
