package mtls

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hearth-home/hearth/authz"
)

// DefaultUpstream is the agent's address when the configuration names none.
const DefaultUpstream = "http://127.0.0.1:18789"

// DefaultRoutes maps the agent's API, as the agent's security model
// describes it, to capabilities. hearth.yaml replaces them as a whole when
// it lists any route.
func DefaultRoutes() []Route {
	return []Route{
		{Path: "/api/status", Methods: []string{"GET"}, Capability: string(authz.CapStatus)},
		{Path: "/api/conversations/*", Methods: []string{"GET"}, Capability: string(authz.CapConversationsRead)},
		{Path: "/api/settings/*", Methods: []string{"GET", "PUT", "POST", "PATCH", "DELETE"}, Capability: string(authz.CapSettingsModify)},
		{Path: "/api/plugins/*", Methods: []string{"GET", "PUT", "POST", "DELETE"}, Capability: string(authz.CapPluginsInstall)},
	}
}

// UpstreamURL parses c.Upstream (default [DefaultUpstream]).
func (c Config) UpstreamURL() (*url.URL, error) {
	s := c.Upstream
	if s == "" {
		s = DefaultUpstream
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("mtls: upstream %q is not an http(s)://host[:port][/path] URL", s)
	}
	return u, nil
}

// Networks parses c.TrustedNetworks (default: loopback only).
func (c Config) Networks() ([]netip.Prefix, error) {
	if len(c.TrustedNetworks) == 0 {
		return DefaultTrustedNetworks(), nil
	}
	out := make([]netip.Prefix, 0, len(c.TrustedNetworks))
	for _, s := range c.TrustedNetworks {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			a, aerr := netip.ParseAddr(strings.TrimSpace(s))
			if aerr != nil {
				return nil, fmt.Errorf("mtls: trusted network %q is not a CIDR such as 192.168.1.0/24", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// RouteList returns c.Routes, or [DefaultRoutes] when there are none.
func (c Config) RouteList() []Route {
	if len(c.Routes) == 0 {
		return DefaultRoutes()
	}
	return c.Routes
}

// Validate checks the gateway configuration against policy (every route's
// capability must be one policy knows), without opening anything.
func (c Config) Validate(policy *authz.Policy) error {
	if _, err := c.UpstreamURL(); err != nil {
		return err
	}
	if _, err := c.Networks(); err != nil {
		return err
	}
	if _, err := c.Origin(); err != nil {
		return err
	}
	if _, err := compileAgent(c.Agent, policy); err != nil {
		return err
	}
	_, err := compileRoutes(c.RouteList(), policy)
	return err
}

// Origin is the RFC 6454 origin of c.PublicURL ("https://host[:port]"),
// or "" when it is not set.
func (c Config) Origin() (string, error) {
	if c.PublicURL == "" {
		return "", nil
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("mtls: public_url %q is not an https://host[:port] URL", c.PublicURL)
	}
	return "https://" + strings.ToLower(u.Host), nil
}

// DefaultTrustedNetworks is loopback only: without configuration, nothing
// but the host itself is "lan".
func DefaultTrustedNetworks() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// routeTable picks the route of a normalised path. Matching ignores ASCII
// case and a trailing slash, because common agent frameworks (Express's
// defaults, for one) route "/API/Settings/" to the same handler as
// "/api/settings": matching more loosely than the agent can only select a
// stricter route, never a looser one.
type routeTable struct {
	exact  map[string]*routeNode // "/api/status"
	prefix map[string]*routeNode // "/api/conversations/*" is stored as "/api/conversations"; "/*" as ""
}

type routeNode struct {
	pattern string
	entries []routeEntry
}

type routeEntry struct {
	methods []string // upper case; "*" is any plain method; GET implies HEAD; MethodWebsocket is an upgrade
	cap     authz.Capability
	limits  routeLimits
	probe   bool // answered without a credential, audited in aggregate (probe.go)
}

// MethodWebsocket, listed among a route's methods, matches a websocket
// upgrade (RFC 6455 §4.1: a GET with "Connection: upgrade" and "Upgrade:
// websocket"). An upgrade matches only a route that lists it, never GET or
// "*", so that loading a page and opening an operator websocket on the same
// path can need different capabilities.
const MethodWebsocket = "WEBSOCKET"

// allows reports whether the entry matches method, where an upgrade
// request's method is MethodWebsocket.
func (e *routeEntry) allows(method string) bool {
	for _, m := range e.methods {
		if m == method || m == "GET" && method == "HEAD" || m == "*" && method != MethodWebsocket {
			return true
		}
	}
	return false
}

// matchResult is what routing found.
type matchResult struct {
	node  *routeNode // nil: no route
	entry *routeEntry
}

func compileRoutes(routes []Route, policy *authz.Policy) (*routeTable, error) {
	t := &routeTable{exact: map[string]*routeNode{}, prefix: map[string]*routeNode{}}
	for i, r := range routes {
		if err := validRoutePath(r.Path); err != nil {
			return nil, fmt.Errorf("mtls: route %d (%q): %w", i, r.Path, err)
		}
		c := authz.Capability(r.Capability)
		if r.Probe {
			if r.Capability != "" {
				return nil, fmt.Errorf("mtls: route %d (%q): a probe needs no capability; remove capability %q or probe", i, r.Path, r.Capability)
			}
			for _, m := range r.Methods {
				if m != "GET" && m != "HEAD" {
					return nil, fmt.Errorf("mtls: route %d (%q): a probe answers GET and HEAD only, not %s", i, r.Path, m)
				}
			}
		} else if policy != nil && !policy.Known(c) {
			return nil, fmt.Errorf("mtls: route %d (%q): capability %q is not one authz knows (a bundle is not allowed here)", i, r.Path, r.Capability)
		}
		if len(r.Methods) == 0 {
			return nil, fmt.Errorf("mtls: route %d (%q): list its methods (GET, POST, … or *)", i, r.Path)
		}
		lim, err := r.limits()
		if err != nil {
			return nil, fmt.Errorf("mtls: route %d (%q): %w", i, r.Path, err)
		}
		var methods []string
		for _, m := range r.Methods {
			if m != "*" && !validMethod(m) {
				return nil, fmt.Errorf("mtls: route %d (%q): method %q is not an upper-case HTTP method", i, r.Path, m)
			}
			methods = append(methods, m)
		}
		key, isPrefix := routeKey(r.Path)
		m := t.exact
		if isPrefix {
			m = t.prefix
		}
		n := m[key]
		if n == nil {
			n = &routeNode{pattern: r.Path}
			m[key] = n
		} else if n.pattern != r.Path {
			return nil, fmt.Errorf("mtls: routes %q and %q differ only in case or a trailing slash", n.pattern, r.Path)
		}
		for _, e := range n.entries {
			for _, x := range methods {
				for _, y := range e.methods {
					if x == y || x == "*" && y != MethodWebsocket || y == "*" && x != MethodWebsocket {
						return nil, fmt.Errorf("mtls: route %d (%q): method %s is listed twice for this path", i, r.Path, x)
					}
				}
			}
		}
		n.entries = append(n.entries, routeEntry{methods: methods, cap: c, limits: lim, probe: r.Probe})
	}
	return t, nil
}

func validRoutePath(p string) error {
	base := p
	if strings.HasSuffix(p, "/*") {
		base = strings.TrimSuffix(p, "*")
	}
	if strings.Contains(base, "*") {
		return fmt.Errorf("'*' may only end a path, as in /api/conversations/*")
	}
	n, err := NormalizePath(base)
	if err != nil {
		return err
	}
	if n != base {
		return fmt.Errorf("not in normal form (want %q)", n)
	}
	if strings.HasPrefix(strings.ToLower(base), "/.hearth/") || strings.ToLower(base) == "/.hearth" {
		return fmt.Errorf("/.hearth/ is hearth's own and cannot be routed to the agent")
	}
	return nil
}

func validMethod(m string) bool {
	if m == "" || len(m) > 20 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return true
}

// routeKey lower-cases a route path and drops "/*" or a trailing slash.
func routeKey(p string) (key string, prefix bool) {
	if strings.HasSuffix(p, "/*") {
		return lowerASCII(strings.TrimSuffix(p, "/*")), true
	}
	return lowerASCII(trimSlash(p)), false
}

func trimSlash(p string) string {
	if len(p) > 1 && p[len(p)-1] == '/' {
		return p[:len(p)-1]
	}
	return p
}

// match finds the most specific route for the normalised path p: an exact
// route, else the longest prefix route on a segment boundary ("/a/*"
// matches "/a" and "/a/b", not "/ab"). It allocates only when p has upper
// case letters.
func (t *routeTable) match(p, method string) matchResult {
	key := trimSlash(lowerASCII(p))
	var n *routeNode
	if n = t.exact[key]; n == nil {
		for k := key; ; {
			if n = t.prefix[k]; n != nil {
				break
			}
			i := strings.LastIndexByte(k, '/')
			if i < 0 {
				break
			}
			k = k[:i]
		}
	}
	if n == nil {
		return matchResult{}
	}
	for i := range n.entries {
		if n.entries[i].allows(method) {
			return matchResult{node: n, entry: &n.entries[i]}
		}
	}
	return matchResult{node: n}
}

// maxTimeout is the longest Timeout of any route (0 if none sets one).
func (t *routeTable) maxTimeout() time.Duration {
	var d time.Duration
	for _, m := range []map[string]*routeNode{t.exact, t.prefix} {
		for _, n := range m {
			for _, e := range n.entries {
				d = max(d, e.limits.timeout)
			}
		}
	}
	return d
}

// methods lists the methods a node allows, for a deny reason.
func (n *routeNode) methods() string {
	var all []string
	for _, e := range n.entries {
		all = append(all, e.methods...)
	}
	slices.Sort(all)
	return strings.Join(slices.Compact(all), ", ")
}

// lowerASCII folds ASCII letters only: Unicode case folding would make
// "\u212A" (the Kelvin sign) match a route for "k".
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
