package auth

// Config is the auth part of hearth.yaml.
type Config struct {
	// Argon2 parameters; zero means RFC 9106's second recommended option
	// (t=3, m=64 MiB, p=4).
	Argon2 Argon2Params `yaml:"argon2,omitempty"`
	// TokenLifetime is the absolute lifetime of an access token. Default "1h".
	TokenLifetime string `yaml:"token_lifetime,omitempty"`
	// TokenIdle ends a token unused for this long. Default "30m".
	TokenIdle string `yaml:"token_idle,omitempty"`
	// RefreshLifetime is the lifetime of a refresh token. Default "168h".
	RefreshLifetime string `yaml:"refresh_lifetime,omitempty"`
}

// Argon2Params are argon2id's cost parameters.
type Argon2Params struct {
	Time      uint32 `yaml:"time,omitempty"`
	MemoryKiB uint32 `yaml:"memory_kib,omitempty"`
	Threads   uint8  `yaml:"threads,omitempty"`
}
