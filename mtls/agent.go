package mtls

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hearth-home/hearth/authz"
)

// Agent is the `gateway.agent` section of hearth.yaml: what the agent
// behind hearth trusts from it. It is data, so that an agent profile
// (`hearth init --agent openclaw`) is a block of configuration and not a
// branch in the gateway. The zero Agent sends only the X-Hearth-* headers.
type Agent struct {
	// Profile names the profile the section was written from ("openclaw",
	// "sample"); informational.
	Profile string `yaml:"profile,omitempty"`
	// ScopesHeader is the request header that carries the principal's
	// agent scopes on every proxied request, websocket upgrades included,
	// e.g. "x-openclaw-scopes". A client's copy is always removed. Empty:
	// no scopes header.
	ScopesHeader string `yaml:"scopes_header,omitempty"`
	// Scopes maps a capability to the agent scopes it stands for. A
	// request's scope set is the union of the scopes of every capability
	// that authz allows the principal here and now, so the trust-level
	// rules narrow it too (a password-only token from remote gets less);
	// it is sent comma-separated, and empty when nothing is allowed.
	Scopes map[string][]string `yaml:"scopes,omitempty"`
	// LocalClientAddress is the client address the agent is told
	// (X-Forwarded-For) for a client on the host itself (a loopback peer).
	// Agents that refuse a forwarded loopback address (OpenClaw answers
	// proxy_attribution_required) serve the owner's own machine this way.
	// No client can choose it: it replaces only a real loopback peer.
	// Default: the real loopback address.
	LocalClientAddress string `yaml:"local_client_address,omitempty"`
	// StripHeaders lists more client request headers to remove, beyond
	// those always removed (see [ClientAddressHeaders]); a name ending in
	// "*" is a prefix.
	StripHeaders []string `yaml:"strip_headers,omitempty"`
}

// ClientAddressHeaders are the client-address and identity headers that
// the gateway removes from every client request, whatever the agent, before
// it sets its own (X-Forwarded-For, -Proto, -Host and X-Hearth-*): the
// headers by which OpenClaw or a common agent or framework might learn a
// client's address or identity (Express's "trust proxy", Django's
// USE_X_FORWARDED_HOST, nginx's real_ip, Cloudflare's and Tailscale's
// identity headers, OpenClaw's own x-openclaw-*). A trailing "*" is a
// prefix; names compare ignoring case, with "_" read as "-" as CGI-style
// servers do.
var ClientAddressHeaders = []string{
	"X-Hearth-*",
	"X-Forwarded-*",
	"Forwarded", // RFC 7239
	"X-Real-IP",
	"True-Client-IP",
	"CF-Connecting-IP",
	"CF-Connecting-IPv6",
	"X-Client-IP",
	"X-Cluster-Client-IP",
	"X-Original-Forwarded-For",
	"Fastly-Client-IP",
	"X-Openclaw-*",
	"Tailscale-*",
}

// agentProfile is an Agent compiled for the request path.
type agentProfile struct {
	scopesHeader string // canonical form; "" for none
	scopes       []capScopes
	localAddr    string // "" keeps the loopback address
	strip        headerMatcher
}

type capScopes struct {
	cap    authz.Capability
	scopes []string
}

func compileAgent(a Agent, policy *authz.Policy) (*agentProfile, error) {
	p := &agentProfile{}
	if a.ScopesHeader != "" {
		if !validHeaderName(a.ScopesHeader) {
			return nil, fmt.Errorf("mtls: gateway.agent.scopes_header %q is not a header name", a.ScopesHeader)
		}
		p.scopesHeader = http.CanonicalHeaderKey(a.ScopesHeader)
	} else if len(a.Scopes) > 0 {
		return nil, fmt.Errorf("mtls: gateway.agent.scopes needs gateway.agent.scopes_header, the header that carries them")
	}
	for c, ss := range a.Scopes {
		if policy != nil && !policy.Known(authz.Capability(c)) {
			return nil, fmt.Errorf("mtls: gateway.agent.scopes: %q is not a capability authz knows (a bundle is not allowed here)", c)
		}
		for _, s := range ss {
			if s == "" || strings.ContainsAny(s, ", \t\r\n") {
				return nil, fmt.Errorf("mtls: gateway.agent.scopes[%q]: scope %q must be one token without commas or spaces", c, s)
			}
		}
		p.scopes = append(p.scopes, capScopes{authz.Capability(c), slices.Clone(ss)})
	}
	slices.SortFunc(p.scopes, func(x, y capScopes) int { return strings.Compare(string(x.cap), string(y.cap)) })
	if a.LocalClientAddress != "" {
		ad, err := netip.ParseAddr(a.LocalClientAddress)
		if err != nil || ad.Unmap().IsLoopback() || ad.IsUnspecified() || ad.Zone() != "" {
			return nil, fmt.Errorf("mtls: gateway.agent.local_client_address %q is not a non-loopback IP address (OpenClaw's profile uses 192.0.0.8, RFC 7600's dummy address)", a.LocalClientAddress)
		}
		p.localAddr = ad.Unmap().String()
	}
	names := append(slices.Clone(ClientAddressHeaders), a.StripHeaders...)
	if p.scopesHeader != "" {
		names = append(names, p.scopesHeader)
	}
	for _, n := range names {
		if !validHeaderName(strings.TrimSuffix(n, "*")) {
			return nil, fmt.Errorf("mtls: gateway.agent.strip_headers: %q is not a header name (or a prefix ending in *)", n)
		}
	}
	p.strip = newHeaderMatcher(names)
	return p, nil
}

// scopesFor is the agent scope set of pr at now: the union of the scopes of
// every mapped capability authz allows, sorted, comma-separated.
func (p *agentProfile) scopesFor(policy *authz.Policy, pr *authz.Principal, now time.Time) string {
	var out []string
	for _, cs := range p.scopes {
		if policy.Decide(pr, cs.cap, now).Allow {
			out = append(out, cs.scopes...)
		}
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), ",")
}

// forwardedFor is the X-Forwarded-For value for a real peer host.
func (p *agentProfile) forwardedFor(host string) string {
	if p.localAddr == "" {
		return host
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Unmap().IsLoopback() {
		return p.localAddr
	}
	return host
}

// headerMatcher matches header names, exact or by prefix, ignoring ASCII
// case and reading "_" as "-". It runs on every request's every header, so
// it compares in place without allocating.
type headerMatcher struct {
	exact, prefixes []string // folded
}

func newHeaderMatcher(names []string) headerMatcher {
	var m headerMatcher
	for _, n := range names {
		if p, ok := strings.CutSuffix(n, "*"); ok {
			m.prefixes = append(m.prefixes, foldHeader(p))
		} else {
			m.exact = append(m.exact, foldHeader(n))
		}
	}
	return m
}

func (m headerMatcher) match(name string) bool {
	for _, e := range m.exact {
		if len(e) == len(name) && foldedPrefix(name, e) {
			return true
		}
	}
	for _, p := range m.prefixes {
		if len(name) >= len(p) && foldedPrefix(name, p) {
			return true
		}
	}
	return false
}

// foldedPrefix reports whether s starts with the folded string p.
func foldedPrefix(s, p string) bool {
	for i := 0; i < len(p); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		}
		if c != p[i] {
			return false
		}
	}
	return true
}

// strip deletes every matching header of h.
func (m headerMatcher) strip(h http.Header) {
	for k := range h {
		if m.match(k) {
			delete(h, k)
		}
	}
}

// foldHeader lower-cases ASCII and maps "_" to "-".
func foldHeader(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		case c == '_':
			b[i] = '-'
		}
	}
	return string(b)
}

// validHeaderName reports whether s is an RFC 9110 §5.1 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
