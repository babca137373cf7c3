package mtls

// Route maps agent paths to the capability they need. Path is exact
// ("/api/status") or a prefix ending in "/*" ("/api/conversations/*").
type Route struct {
	Path       string   `yaml:"path"`
	Methods    []string `yaml:"methods"`
	Capability string   `yaml:"capability"`
}

// Config is the gateway part of hearth.yaml. Zero values mean the defaults
// noted on each field.
type Config struct {
	// Listen is the gateway's address. Default ":8443".
	Listen string `yaml:"listen,omitempty"`
	// Upstream is the agent's base URL. Default "http://127.0.0.1:18789".
	Upstream string `yaml:"upstream,omitempty"`
	// TrustedNetworks are CIDRs whose clients are in the lan zone.
	// Default: loopback only.
	TrustedNetworks []string `yaml:"trusted_networks,omitempty"`
	// Routes map agent paths to capabilities; a path no route matches is
	// refused (default deny).
	Routes []Route `yaml:"routes,omitempty"`
}
