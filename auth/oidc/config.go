package oidc

// Provider is one OpenID Connect provider in hearth.yaml.
type Provider struct {
	// Name is the provider's path segment: /.hearth/v1/auth/oidc/{name}/login.
	Name string `yaml:"name"`
	// Issuer must equal the discovered issuer exactly.
	Issuer   string `yaml:"issuer"`
	ClientID string `yaml:"client_id"`
	// ClientSecret, or ClientSecretFile holding it (preferred).
	ClientSecret     string   `yaml:"client_secret,omitempty"`
	ClientSecretFile string   `yaml:"client_secret_file,omitempty"`
	Scopes           []string `yaml:"scopes,omitempty"`
}
