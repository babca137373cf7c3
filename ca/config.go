package ca

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
}
