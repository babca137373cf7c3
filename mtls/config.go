package mtls

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Route maps agent paths to the capability they need. Path is exact
// ("/api/status") or a prefix ending in "/*" ("/api/conversations/*").
//
// A Route is plain data, so that a configuration reload can rebuild the
// gateway's table from hearth.yaml; [NewGateway] (and [Config.Validate])
// compile and check it.
type Route struct {
	Path string `yaml:"path"`
	// Methods lists the HTTP methods the route allows: upper case, "*" for
	// any, GET implies HEAD, and [MethodWebsocket] ("WEBSOCKET") for a
	// websocket upgrade, which matches nothing else.
	Methods []string `yaml:"methods"`
	// Capability is what the route needs. Empty only for a probe.
	Capability string `yaml:"capability,omitempty"`
	// Probe marks a liveness or readiness endpoint of the agent (GET and
	// HEAD only): it needs no credential, the agent sees an anonymous
	// request, and the gateway records probes in aggregate (one audit entry
	// per route per ProbeAuditEvery with their count) instead of one signed
	// entry each. Default false.
	Probe bool `yaml:"probe,omitempty"`
	// MaxBody bounds the request body: bytes, or a size such as "512KiB",
	// "32MiB" (413 beyond). Default: the gateway's (1 MiB).
	MaxBody string `yaml:"max_body,omitempty"`
	// Timeout bounds the wait for the agent's response headers, such as
	// "10m" (504 beyond); a streamed body or an upgraded connection may then
	// last as long as it likes. Default: the gateway's (60s).
	Timeout string `yaml:"timeout,omitempty"`
}

// routeLimits are a route's parsed MaxBody and Timeout; zero means the
// gateway's default.
type routeLimits struct {
	maxBody int64
	timeout time.Duration
}

func (r Route) limits() (routeLimits, error) {
	var l routeLimits
	if r.MaxBody != "" {
		n, err := ParseSize(r.MaxBody)
		if err != nil {
			return l, err
		}
		l.maxBody = n
	}
	if r.Timeout != "" {
		d, err := time.ParseDuration(r.Timeout)
		if err != nil || d <= 0 {
			return l, fmt.Errorf("timeout %q is not a positive duration such as 10m", r.Timeout)
		}
		l.timeout = d
	}
	return l, nil
}

// ParseSize reads a byte count: digits, optionally followed by KiB, MiB or
// GiB (powers of 1024). It refuses zero, negative and overflowing sizes.
func ParseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range [...]struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is not a positive byte count such as 1048576, 512KiB or 32MiB", s)
	}
	return n * mult, nil
}

// Config is the gateway part of hearth.yaml. Zero values mean the defaults
// noted on each field.
type Config struct {
	// Listen is the gateway's address. Default ":8443".
	Listen string `yaml:"listen,omitempty"`
	// PublicURL is the gateway's URL as devices and browsers reach it
	// ("https://hearth.home.arpa:8443"): enrollment links and the CA URL
	// that `hearth device add` prints use it, and so does the agent's
	// allowed origin. `hearth serve --public-url` overrides it. Default
	// https://localhost:PORT.
	PublicURL string `yaml:"public_url,omitempty"`
	// Upstream is the agent's base URL. Default "http://127.0.0.1:18789".
	Upstream string `yaml:"upstream,omitempty"`
	// TrustedNetworks are CIDRs whose clients are in the lan zone.
	// Default: loopback only.
	TrustedNetworks []string `yaml:"trusted_networks,omitempty"`
	// Routes map agent paths to capabilities; a path no route matches is
	// refused (default deny).
	Routes []Route `yaml:"routes,omitempty"`
	// Agent says what the agent trusts from hearth: its scopes header and
	// how capabilities map onto its scopes, how on-host clients are
	// attributed, which more headers to strip. The zero Agent sends only
	// the X-Hearth-* headers.
	Agent Agent `yaml:"agent,omitempty"`
}
