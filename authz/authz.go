// Package authz answers one question: may this principal use this
// capability, here, now?
//
// It is the single decision function of hearth. The gateway's routes,
// hearth's own /.hearth/v1/ API, the admin socket, the agent-facing
// /.hearth/v1/authz/check endpoint and `hearth authz explain` all call
// [Policy.Decide]. The package is pure: no I/O, no clock of its own (the
// caller passes the time), no globals.
//
// # Trust boundary
//
// authz trusts its inputs: the principal was authenticated by mtls or auth,
// which set how (Method) and from where (Zone). authz never authenticates.
//
// # Default deny
//
// An unknown capability, an empty or malformed principal, a capability the
// principal was not granted, or a trust requirement that is not met all
// deny. Configuration that cannot be parsed is rejected by [New]; a policy
// that was never built (the zero Policy) denies everything.
//
// # Capabilities and bundles
//
// Capabilities are "area:action" strings. Bundles expand to capabilities:
// system:read is status and conversations:read, system:write is
// settings:modify and plugins:install, and system:admin is every capability
// the policy knows, hearth:admin included. hearth.yaml may declare more
// capabilities and bundles (authz.capabilities, authz.bundles).
//
// # Trust requirements
//
// Being granted a capability is necessary, not sufficient: each capability
// may also require how the principal authenticated (local, device, token),
// from where (lan, remote), how recently (max_age), and a second factor.
// The defaults ([DefaultRequirements]) follow the authenticator assurance
// levels of NIST SP 800-63B:
//
//   - a device certificate (a key held by an enrolled device) and the local
//     admin socket (the owner's uid on the host) count as AAL2 equivalents:
//     possession of a key plus control of the device;
//   - a token from a password-only login is AAL1 (one factor, something you
//     know);
//   - a token from a login with a second factor (password + TOTP, or an
//     OIDC provider that asserted MFA) is AAL2 (SP 800-63B §4.2: two
//     distinct factors).
//
// So plugins:install and settings:modify, which change what the agent can
// do, refuse a password-only (AAL1) token from a remote network ("plugins:install
// requires a device or local session, this is a token from remote"), while
// the same token with a second factor (AAL2) is allowed: it meets the
// assurance level SP 800-63B asks for access to personal data and privileged
// actions, and refusing it would leave an owner away from home no way to
// manage the agent. On the lan a password-only token is allowed for these,
// because being on the household network is itself a (weak) barrier the
// owner controls. hearth:admin (devices, users, audit) is stricter: every
// token needs a second factor, lan or remote, and an authentication at most
// 15 minutes old (OWASP ASVS 5.0 V7.5: re-authenticate before sensitive
// operations). Device and local sessions are verified afresh on every
// request (the device record is looked up per request), so max_age applies
// to tokens only.
//
// A token from a passkey (WebAuthn with user verification) is multi-factor
// and phishing resistant: NIST SP 800-63B-4 accepts syncable passkeys at
// AAL2 and counts them as phishing resistant (§3.2.5), so a passkey session
// carries MFA and PhishingResistant. A requirement may ask for it
// (phishing_resistant: true; devices and local meet it too), and the
// default lets a passkey session keep hearth:admin for 12 hours where a
// password + one-time-code session must have signed in within 15 minutes.
package authz

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Capability is a namespaced permission string, "area:action".
type Capability string

// Method is how a principal authenticated.
type Method string

// The authentication methods, from most to least trusted.
const (
	MethodLocal  Method = "local"  // the admin unix socket, owner's uid
	MethodDevice Method = "device" // a client certificate from hearth's CA
	MethodToken  Method = "token"  // a bearer token from a password or OIDC login
)

// Zone is the network a request came from.
type Zone string

// The network zones.
const (
	ZoneLAN    Zone = "lan"    // a configured trusted network (or the local socket)
	ZoneRemote Zone = "remote" // anything else
)

// Kind is the kind of a principal.
type Kind string

// The principal kinds.
const (
	KindUser   Kind = "user"
	KindDevice Kind = "device"
)

// The capabilities hearth knows without configuration.
const (
	CapStatus            Capability = "status"
	CapConversationsRead Capability = "conversations:read"
	CapSettingsModify    Capability = "settings:modify"
	CapPluginsInstall    Capability = "plugins:install"
	CapHearthAdmin       Capability = "hearth:admin"
)

// The default bundles from the agent's security model.
const (
	BundleSystemRead  Capability = "system:read"
	BundleSystemWrite Capability = "system:write"
	BundleSystemAdmin Capability = "system:admin"
)

// Principal is an authenticated identity as the authorizer sees it.
type Principal struct {
	// ID is "user:<name>" or "device:<name>".
	ID string
	// Kind is user or device.
	Kind Kind
	// Caps are the expanded capabilities granted to the principal (see
	// [Policy.Expand]); a token may carry fewer than its user has.
	Caps []Capability
	// Method is how the principal authenticated on this request.
	Method Method
	// Zone is where the request came from.
	Zone Zone
	// AuthTime is when the principal authenticated (token issue time, or
	// the start of the TLS connection for devices).
	AuthTime time.Time
	// MFA is true when a second factor was used.
	MFA bool
	// PhishingResistant is true when the token's authentication used a
	// phishing-resistant authenticator: a WebAuthn passkey with user
	// verification, whose signature is bound to hearth's origin (NIST SP
	// 800-63B-4 §3.2.5). Device and local sessions are phishing resistant
	// by their nature and need not set it.
	PhishingResistant bool
}

// phishingResistant reports whether pr authenticated in a way a phishing
// page cannot replay: a device certificate (mutual TLS binds the key to
// the connection), the local socket, or a token from a passkey.
func (pr *Principal) phishingResistant() bool {
	return pr.Method != MethodToken || pr.PhishingResistant
}

// Has reports whether the principal was granted c.
func (p *Principal) Has(c Capability) bool {
	for _, x := range p.Caps {
		if x == c {
			return true
		}
	}
	return false
}

// Requirement is the trust a capability demands beyond being granted.
// The zero Requirement demands nothing more. Checks run in the order
// Methods, Zones, second factor, MaxAge; the first that fails is the reason.
type Requirement struct {
	// Methods lists the authentication methods allowed; empty means any.
	Methods []Method
	// Zones lists the zones allowed; empty means any.
	Zones []Zone
	// MaxAge bounds the age of a token's authentication; zero means no
	// bound. Device and local sessions are verified afresh on every request
	// and are not bounded by it.
	MaxAge time.Duration
	// MFA demands a second factor when the method is token.
	MFA bool
	// RemoteTokenMFA demands a second factor only for a token from remote
	// (password-only sessions away from home).
	RemoteTokenMFA bool
	// PhishingResistant demands, of a token, that its authentication used
	// a phishing-resistant authenticator (a passkey); device and local
	// sessions meet it.
	PhishingResistant bool
	// PhishingResistantMaxAge, when set, bounds a phishing-resistant
	// token's authentication instead of MaxAge: a passkey session may stay
	// useful longer than a password + one-time-code one.
	PhishingResistantMaxAge time.Duration
}

// Outcome says why a decision came out as it did. Decisions carry a code
// and their inputs, and format the human reason only when asked, so that
// Decide allocates nothing.
type Outcome uint8

// The outcomes.
const (
	OutcomeNoPolicy Outcome = iota
	OutcomeAllowed
	OutcomeEmptyPrincipal
	OutcomeBadPrincipal
	OutcomeUnknownCapability
	OutcomeNotGranted
	OutcomeMethod
	OutcomeZone
	OutcomeTooOld
	OutcomeNeedsMFA
	OutcomeNeedsPhishingResistant
)

// Decision is the result of [Policy.Decide].
type Decision struct {
	Allow   bool
	Outcome Outcome
	// Capability is what was asked for.
	Capability Capability
	p          *Principal
	req        Requirement
	age        time.Duration
}

// Reason is a sentence a person can read, e.g.
// "device:kitchen-pi lacks plugins:install (has status, conversations:read)".
func (d Decision) Reason() string {
	id := "(nobody)"
	if d.p != nil && d.p.ID != "" {
		id = d.p.ID
	}
	switch d.Outcome {
	case OutcomeAllowed:
		// Concatenation, not Sprintf: this runs for every allowed request
		// that is audited, and costs one allocation this way.
		return id + " has " + string(d.Capability) + " via " + string(d.p.Method) + " from " + string(d.p.Zone)
	case OutcomeEmptyPrincipal:
		return fmt.Sprintf("no authenticated principal for %s", d.Capability)
	case OutcomeBadPrincipal:
		return fmt.Sprintf("%s is not a well-formed principal (kind %q, method %q, zone %q)", id, d.p.Kind, d.p.Method, d.p.Zone)
	case OutcomeUnknownCapability:
		return fmt.Sprintf("%q is not a known capability", string(d.Capability))
	case OutcomeNotGranted:
		return fmt.Sprintf("%s lacks %s (has %s)", id, d.Capability, joinCaps(d.p.Caps))
	case OutcomeMethod:
		return fmt.Sprintf("%s requires %s, this is a %s from %s", d.Capability, describeMethods(d.req.Methods), d.p.Method, d.p.Zone)
	case OutcomeZone:
		return fmt.Sprintf("%s requires a request from %s, this is a %s from %s", d.Capability, joinZones(d.req.Zones), d.p.Method, d.p.Zone)
	case OutcomeTooOld:
		maxAge := d.req.maxAge(d.p)
		if d.p.AuthTime.IsZero() {
			return fmt.Sprintf("%s requires an authentication at most %s old, this one has no authentication time; log in again", d.Capability, maxAge)
		}
		if d.age < 0 {
			return fmt.Sprintf("%s requires an authentication at most %s old, this one is dated %s in the future", d.Capability, maxAge, (-d.age).Truncate(time.Second))
		}
		return fmt.Sprintf("%s requires an authentication at most %s old, this one is %s old; log in again", d.Capability, maxAge, d.age.Truncate(time.Second))
	case OutcomeNeedsPhishingResistant:
		return fmt.Sprintf("%s requires a phishing-resistant sign-in (a passkey, a device or local session), this is a %s from %s without one", d.Capability, d.p.Method, d.p.Zone)
	case OutcomeNeedsMFA:
		if !d.req.MFA && d.req.RemoteTokenMFA {
			return fmt.Sprintf("%s requires a device or local session, this is a token from %s (a token would need a second factor)", d.Capability, d.p.Zone)
		}
		return fmt.Sprintf("%s requires a device or local session or a token with a second factor, this is a %s from %s without one", d.Capability, d.p.Method, d.p.Zone)
	}
	return "no authorization policy is loaded"
}

// Principal returns the principal the decision was made for (nil when
// there was none).
func (d Decision) Principal() *Principal { return d.p }

// Requirement returns the trust requirement that was applied (the zero
// Requirement when the decision did not get that far or there is none).
func (d Decision) Requirement() Requirement { return d.req }

// Verdict is "allow" or "deny".
func (d Decision) Verdict() string {
	if d.Allow {
		return "allow"
	}
	return "deny"
}

// String prints "allow: reason" or "deny: reason".
func (d Decision) String() string {
	if d.Allow {
		return "allow: " + d.Reason()
	}
	return "deny: " + d.Reason()
}

func joinCaps(cs []Capability) string {
	if len(cs) == 0 {
		return "nothing"
	}
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

func joinZones(zs []Zone) string {
	s := make([]string, len(zs))
	for i, z := range zs {
		s[i] = string(z)
	}
	return strings.Join(s, " or ")
}

func describeMethods(ms []Method) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = string(m)
	}
	return "a " + strings.Join(s, " or ") + " session"
}

// String describes the requirement, e.g. "methods device or local; a
// second factor for tokens from remote", or "none".
func (r Requirement) String() string {
	var parts []string
	if len(r.Methods) > 0 {
		s := make([]string, len(r.Methods))
		for i, m := range r.Methods {
			s[i] = string(m)
		}
		parts = append(parts, "methods "+strings.Join(s, " or "))
	}
	if len(r.Zones) > 0 {
		parts = append(parts, "zones "+joinZones(r.Zones))
	}
	switch {
	case r.MFA:
		parts = append(parts, "a second factor for tokens")
	case r.RemoteTokenMFA:
		parts = append(parts, "a second factor for tokens from remote")
	}
	if r.PhishingResistant {
		parts = append(parts, "phishing-resistant tokens (passkey)")
	}
	if r.MaxAge > 0 {
		parts = append(parts, "tokens at most "+r.MaxAge.String()+" old")
	}
	if r.PhishingResistantMaxAge > 0 {
		parts = append(parts, "passkey tokens at most "+r.PhishingResistantMaxAge.String()+" old")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// Policy holds bundles, known capabilities and trust requirements. Build it
// with [New]; it is immutable afterwards and safe for concurrent use.
type Policy struct {
	bundles map[Capability][]Capability
	known   map[Capability]bool
	reqs    map[Capability]Requirement
	all     []Capability // sorted, every known non-bundle capability
}

// Config is the `authz:` section of hearth.yaml. The zero Config yields the
// default bundles and requirements.
type Config struct {
	// Capabilities lists extra capabilities beyond the built-in ones.
	Capabilities []string `yaml:"capabilities,omitempty"`
	// Bundles maps a bundle name to capabilities (or other bundles). Entries
	// here replace a default bundle of the same name. system:admin always
	// expands to every capability.
	Bundles map[string][]string `yaml:"bundles,omitempty"`
	// Requirements maps a capability to its trust requirement, replacing the
	// default for that capability.
	Requirements map[string]RequirementConfig `yaml:"requirements,omitempty"`
}

// RequirementConfig is the YAML form of a [Requirement].
type RequirementConfig struct {
	Methods        []string `yaml:"methods,omitempty"`          // local, device, token
	Zones          []string `yaml:"zones,omitempty"`            // lan, remote
	MaxAge         string   `yaml:"max_age,omitempty"`          // e.g. "15m"
	MFA            bool     `yaml:"mfa,omitempty"`              // token sessions need a second factor
	RemoteTokenMFA bool     `yaml:"remote_token_mfa,omitempty"` // remote token sessions need a second factor
	// PhishingResistant: token sessions need a passkey (devices and local meet it).
	PhishingResistant bool `yaml:"phishing_resistant,omitempty"`
	// PhishingResistantMaxAge replaces max_age for passkey sessions, e.g. "12h".
	PhishingResistantMaxAge string `yaml:"phishing_resistant_max_age,omitempty"`
}

// DefaultBundles are the bundles of the agent's security model.
func DefaultBundles() map[string][]string {
	return map[string][]string{
		string(BundleSystemRead):  {string(CapStatus), string(CapConversationsRead)},
		string(BundleSystemWrite): {string(CapSettingsModify), string(CapPluginsInstall)},
	}
}

// DefaultRequirements returns the built-in trust requirements (see the
// package documentation for why). Installing plugins and changing settings
// change what the agent can do, so from remote they need a device or local
// session, or a token with a second factor (NIST SP 800-63B AAL2);
// hearth:admin needs a second factor on every token and a fresh
// authentication (15 minutes, OWASP ASVS 5.0 V7.5 re-authentication before
// sensitive operations) — except that a passkey session (phishing
// resistant, NIST SP 800-63B-4 AAL2) keeps hearth:admin for 12 hours, the
// reauthentication bound SP 800-63B-4 §2.3.3 sets even for AAL3 (AAL2's
// §2.2.3 allows 24), so that an owner away from home signs in once with a
// passkey rather than every 15 minutes. An entry in hearth.yaml replaces
// the default of its capability as a whole.
func DefaultRequirements() map[string]RequirementConfig {
	return map[string]RequirementConfig{
		string(CapPluginsInstall): {RemoteTokenMFA: true},
		string(CapHearthAdmin):    {MFA: true, MaxAge: "15m", PhishingResistantMaxAge: "12h"},
		string(CapSettingsModify): {RemoteTokenMFA: true},
	}
}

var (
	// ErrConfig is wrapped by every configuration error.
	ErrConfig = errors.New("authz: invalid configuration")
)

func validCapName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == ':' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// New builds a Policy from cfg, merged over the defaults.
func New(cfg Config) (*Policy, error) {
	p := &Policy{
		bundles: map[Capability][]Capability{},
		known:   map[Capability]bool{},
		reqs:    map[Capability]Requirement{},
	}
	for _, c := range []Capability{CapStatus, CapConversationsRead, CapSettingsModify, CapPluginsInstall, CapHearthAdmin} {
		p.known[c] = true
	}
	for _, c := range cfg.Capabilities {
		if !validCapName(c) {
			return nil, fmt.Errorf("%w: capability %q: use lowercase area:action", ErrConfig, c)
		}
		p.known[Capability(c)] = true
	}
	bundles := DefaultBundles()
	for k, v := range cfg.Bundles {
		bundles[k] = v
	}
	delete(bundles, string(BundleSystemAdmin))
	for name := range bundles {
		if !validCapName(name) {
			return nil, fmt.Errorf("%w: bundle %q: use lowercase area:action", ErrConfig, name)
		}
		if p.known[Capability(name)] {
			return nil, fmt.Errorf("%w: bundle %q has the name of a capability", ErrConfig, name)
		}
	}
	// Expand bundles (which may name other bundles) with cycle detection.
	var expand func(name string, seen map[string]bool) ([]Capability, error)
	expand = func(name string, seen map[string]bool) ([]Capability, error) {
		if seen[name] {
			return nil, fmt.Errorf("%w: bundle %q includes itself", ErrConfig, name)
		}
		seen[name] = true
		defer delete(seen, name)
		var out []Capability
		for _, m := range bundles[name] {
			switch {
			case p.known[Capability(m)]:
				out = append(out, Capability(m))
			case bundles[m] != nil:
				sub, err := expand(m, seen)
				if err != nil {
					return nil, err
				}
				out = append(out, sub...)
			default:
				return nil, fmt.Errorf("%w: bundle %q names unknown capability %q (declare it under authz.capabilities)", ErrConfig, name, m)
			}
		}
		return out, nil
	}
	for name := range bundles {
		caps, err := expand(name, map[string]bool{})
		if err != nil {
			return nil, err
		}
		p.bundles[Capability(name)] = dedupe(caps)
	}
	for c := range p.known {
		p.all = append(p.all, c)
	}
	slices.Sort(p.all)
	p.bundles[BundleSystemAdmin] = p.all

	reqs := DefaultRequirements()
	for k, v := range cfg.Requirements {
		reqs[k] = v
	}
	for name, rc := range reqs {
		if !p.known[Capability(name)] {
			return nil, fmt.Errorf("%w: requirement for unknown capability %q", ErrConfig, name)
		}
		r, err := rc.parse()
		if err != nil {
			return nil, fmt.Errorf("%w: requirement for %q: %v", ErrConfig, name, err)
		}
		p.reqs[Capability(name)] = r
	}
	return p, nil
}

func (rc RequirementConfig) parse() (Requirement, error) {
	var r Requirement
	for _, m := range rc.Methods {
		switch Method(m) {
		case MethodLocal, MethodDevice, MethodToken:
			r.Methods = append(r.Methods, Method(m))
		default:
			return r, fmt.Errorf("method %q is not local, device or token", m)
		}
	}
	for _, z := range rc.Zones {
		switch Zone(z) {
		case ZoneLAN, ZoneRemote:
			r.Zones = append(r.Zones, Zone(z))
		default:
			return r, fmt.Errorf("zone %q is not lan or remote", z)
		}
	}
	if rc.MaxAge != "" {
		d, err := time.ParseDuration(rc.MaxAge)
		if err != nil || d <= 0 {
			return r, fmt.Errorf("max_age %q is not a positive duration such as 15m", rc.MaxAge)
		}
		r.MaxAge = d
	}
	if rc.PhishingResistantMaxAge != "" {
		d, err := time.ParseDuration(rc.PhishingResistantMaxAge)
		if err != nil || d <= 0 {
			return r, fmt.Errorf("phishing_resistant_max_age %q is not a positive duration such as 12h", rc.PhishingResistantMaxAge)
		}
		r.PhishingResistantMaxAge = d
	}
	r.MFA = rc.MFA
	r.RemoteTokenMFA = rc.RemoteTokenMFA
	r.PhishingResistant = rc.PhishingResistant
	return r, nil
}

func dedupe(cs []Capability) []Capability {
	slices.Sort(cs)
	return slices.Compact(cs)
}

// Known reports whether c is a capability (not a bundle) this policy knows.
func (p *Policy) Known(c Capability) bool { return p != nil && p.known[c] }

// All returns every known capability, sorted.
func (p *Policy) All() []Capability { return slices.Clone(p.all) }

// Expand turns granted capability and bundle names into the sorted set of
// capabilities. An unknown name is an error, so that a typo in
// `--caps` is caught when the grant is made rather than silently ignored.
func (p *Policy) Expand(granted []string) ([]Capability, error) {
	var out []Capability
	for _, g := range granted {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		c := Capability(g)
		if b, ok := p.bundles[c]; ok {
			out = append(out, b...)
			continue
		}
		if p.known[c] {
			out = append(out, c)
			continue
		}
		return nil, fmt.Errorf("authz: %q is neither a capability nor a bundle (known: %s)", g, p.describeNames())
	}
	return dedupe(out), nil
}

func (p *Policy) describeNames() string {
	var names []string
	for b := range p.bundles {
		names = append(names, string(b))
	}
	for c := range p.known {
		names = append(names, string(c))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// Requirement returns the trust requirement of c.
func (p *Policy) Requirement(c Capability) Requirement { return p.reqs[c] }

// Decide decides whether pr may use c at time now. It never allocates on
// the allow path.
func (p *Policy) Decide(pr *Principal, c Capability, now time.Time) Decision {
	d := Decision{Capability: c, p: pr}
	if p == nil || p.known == nil {
		d.Outcome = OutcomeNoPolicy
		return d
	}
	if pr == nil || pr.ID == "" {
		d.Outcome = OutcomeEmptyPrincipal
		return d
	}
	if !validPrincipal(pr) {
		d.Outcome = OutcomeBadPrincipal
		return d
	}
	if !p.known[c] {
		d.Outcome = OutcomeUnknownCapability
		return d
	}
	if !pr.Has(c) {
		d.Outcome = OutcomeNotGranted
		return d
	}
	r, ok := p.reqs[c]
	if ok {
		d.req = r
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, pr.Method) {
			d.Outcome = OutcomeMethod
			return d
		}
		if len(r.Zones) > 0 && !slices.Contains(r.Zones, pr.Zone) {
			d.Outcome = OutcomeZone
			return d
		}
		if pr.Method == MethodToken && !pr.MFA && (r.MFA || r.RemoteTokenMFA && pr.Zone == ZoneRemote) {
			d.Outcome = OutcomeNeedsMFA
			return d
		}
		if r.PhishingResistant && !pr.phishingResistant() {
			d.Outcome = OutcomeNeedsPhishingResistant
			return d
		}
		if maxAge := r.maxAge(pr); maxAge > 0 && pr.Method == MethodToken {
			age := now.Sub(pr.AuthTime)
			if pr.AuthTime.IsZero() || age > maxAge || age < -time.Minute {
				d.age = age
				d.Outcome = OutcomeTooOld
				return d
			}
		}
	}
	d.Allow = true
	d.Outcome = OutcomeAllowed
	return d
}

// maxAge is the bound on pr's authentication age under r: the passkey
// bound for a phishing-resistant token when one is set, else MaxAge.
func (r Requirement) maxAge(pr *Principal) time.Duration {
	if r.PhishingResistantMaxAge > 0 && pr != nil && pr.PhishingResistant {
		return r.PhishingResistantMaxAge
	}
	return r.MaxAge
}

func validPrincipal(pr *Principal) bool {
	switch pr.Kind {
	case KindUser, KindDevice:
	default:
		return false
	}
	if !strings.HasPrefix(pr.ID, string(pr.Kind)+":") || len(pr.ID) == len(pr.Kind)+1 {
		return false
	}
	switch pr.Method {
	case MethodLocal, MethodDevice, MethodToken:
	default:
		return false
	}
	switch pr.Zone {
	case ZoneLAN, ZoneRemote:
	default:
		return false
	}
	// A device authenticates only by its certificate.
	if pr.Kind == KindDevice && pr.Method != MethodDevice {
		return false
	}
	return true
}
