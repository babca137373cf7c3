package auth

import (
	"fmt"
	"runtime"
	"time"
)

// Config is the auth part of hearth.yaml. Its zero value is the default
// configuration; every field documents its default.
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
	// ResetLifetime is how long an admin-issued reset code stays valid.
	// Default "30m".
	ResetLifetime string `yaml:"reset_lifetime,omitempty"`
	// MaxConcurrentHashes bounds how many argon2id evaluations run at once,
	// so that peak memory stays below MaxConcurrentHashes × Argon2.MemoryKiB.
	// Default: the number of CPUs, at most 4.
	MaxConcurrentHashes int `yaml:"max_concurrent_hashes,omitempty"`
	// HashQueue bounds how many password checks may wait for a slot;
	// beyond it a login is answered 503 at once. Default 4 × MaxConcurrentHashes.
	HashQueue int `yaml:"hash_queue,omitempty"`
	// ClientBurst is the size of each client address's token bucket of
	// login, recovery and reset attempts (across all accounts, against
	// password spraying). Default 10.
	ClientBurst int `yaml:"client_burst,omitempty"`
	// ClientRefill is how long a client address waits to regain one
	// attempt. Default "6s" (ten attempts a minute).
	ClientRefill string `yaml:"client_refill,omitempty"`
}

// Argon2Params are argon2id's cost parameters.
type Argon2Params struct {
	Time      uint32 `yaml:"time,omitempty"`
	MemoryKiB uint32 `yaml:"memory_kib,omitempty"`
	Threads   uint8  `yaml:"threads,omitempty"`
}

// Defaults (see the fields of Config).
const (
	DefaultArgon2Time      = 3
	DefaultArgon2MemoryKiB = 64 * 1024
	DefaultArgon2Threads   = 4
	DefaultTokenLifetime   = time.Hour
	DefaultTokenIdle       = 30 * time.Minute
	DefaultRefreshLifetime = 7 * 24 * time.Hour
	DefaultResetLifetime   = 30 * time.Minute
	DefaultClientBurst     = 10
	DefaultClientRefill    = 6 * time.Second
)

// The floor that Validate enforces on configured argon2id parameters: OWASP
// Password Storage Cheat Sheet's minimum for argon2id (m=19 MiB, t=2, p=1).
const (
	minArgon2MemoryKiB = 19 * 1024
	minArgon2Time      = 2
)

// settings is Config resolved: defaults applied, durations parsed.
type settings struct {
	argon2          Argon2Params
	tokenLifetime   time.Duration
	tokenIdle       time.Duration
	refreshLifetime time.Duration
	resetLifetime   time.Duration
	maxHashes       int
	hashQueue       int
	clientBurst     int
	clientRefill    time.Duration
}

// Validate checks the configuration as hearth.yaml states it, including the
// OWASP floor on argon2id's cost (a weaker setting is refused).
func (c Config) Validate() error {
	s, err := c.resolve()
	if err != nil {
		return err
	}
	if s.argon2.MemoryKiB < minArgon2MemoryKiB || s.argon2.Time < minArgon2Time {
		return fmt.Errorf("auth: argon2 parameters m=%d KiB, t=%d are below the OWASP minimum (m=%d KiB, t=%d)",
			s.argon2.MemoryKiB, s.argon2.Time, minArgon2MemoryKiB, minArgon2Time)
	}
	return nil
}

// resolve applies defaults and parses durations. It does not enforce the
// argon2 floor, so that tests may run with tiny parameters.
func (c Config) resolve() (settings, error) {
	s := settings{argon2: c.Argon2}
	if s.argon2.Time == 0 {
		s.argon2.Time = DefaultArgon2Time
	}
	if s.argon2.MemoryKiB == 0 {
		s.argon2.MemoryKiB = DefaultArgon2MemoryKiB
	}
	if s.argon2.Threads == 0 {
		s.argon2.Threads = DefaultArgon2Threads
	}
	if s.argon2.MemoryKiB < 8*uint32(s.argon2.Threads) {
		return s, fmt.Errorf("auth: argon2 memory_kib must be at least 8 × threads")
	}
	if s.argon2.MemoryKiB > 4<<20 {
		return s, fmt.Errorf("auth: argon2 memory_kib %d is above 4 GiB", s.argon2.MemoryKiB)
	}
	var err error
	dur := func(name, v string, def time.Duration) time.Duration {
		if v == "" || err != nil {
			return def
		}
		d, e := time.ParseDuration(v)
		if e != nil || d <= 0 {
			err = fmt.Errorf("auth: %s %q is not a positive duration such as 15m", name, v)
			return def
		}
		return d
	}
	s.tokenLifetime = dur("token_lifetime", c.TokenLifetime, DefaultTokenLifetime)
	s.tokenIdle = dur("token_idle", c.TokenIdle, DefaultTokenIdle)
	s.refreshLifetime = dur("refresh_lifetime", c.RefreshLifetime, DefaultRefreshLifetime)
	s.resetLifetime = dur("reset_lifetime", c.ResetLifetime, DefaultResetLifetime)
	s.clientRefill = dur("client_refill", c.ClientRefill, DefaultClientRefill)
	if err != nil {
		return s, err
	}
	s.maxHashes = c.MaxConcurrentHashes
	if s.maxHashes <= 0 {
		s.maxHashes = min(runtime.NumCPU(), 4)
	}
	s.hashQueue = c.HashQueue
	if s.hashQueue <= 0 {
		s.hashQueue = 4 * s.maxHashes
	}
	s.clientBurst = c.ClientBurst
	if s.clientBurst <= 0 {
		s.clientBurst = DefaultClientBurst
	}
	if c.MaxConcurrentHashes < 0 || c.HashQueue < 0 || c.ClientBurst < 0 {
		return s, fmt.Errorf("auth: max_concurrent_hashes, hash_queue and client_burst must not be negative")
	}
	return s, nil
}
