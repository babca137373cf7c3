// Package config loads and validates hearth.yaml, the data dir's one
// configuration file. Loading and validation are separate so that `hearth
// init` can write a file it has validated, and `hearth serve` refuses one
// that does not validate before it opens any listener.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/auth/oidc"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/ca"
	"github.com/hearth-home/hearth/mtls"
)

// FileName is the configuration file's name inside the data dir.
const FileName = "hearth.yaml"

// MaxSize bounds hearth.yaml; a larger file is refused unread.
const MaxSize = 1 << 20

// Config is hearth.yaml. Every section's zero value means its defaults.
type Config struct {
	// Name is the household's name, shown in the CA's subject.
	Name    string       `yaml:"name,omitempty"`
	Gateway mtls.Config  `yaml:"gateway"`
	CA      ca.Config    `yaml:"ca"`
	Authz   authz.Config `yaml:"authz"`
	Auth    auth.Config  `yaml:"auth"`
	Audit   audit.Config `yaml:"audit"`
	// OIDC providers for "Sign in with …".
	OIDC []oidc.Provider `yaml:"oidc,omitempty"`
	// Store is where hearth keeps its state (default: the embedded
	// hearth.db; postgres for replicas).
	Store Store `yaml:"store,omitempty"`
}

// Parse decodes hearth.yaml strictly: an unknown key is an error, so that
// a misspelt setting is not silently ignored.
func Parse(b []byte) (*Config, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("config: %s is larger than %d bytes", FileName, MaxSize)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config: %s: %w", FileName, err)
	}
	return &c, nil
}

// Load reads and parses path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: reading %s: %w", path, err)
	}
	return Parse(b)
}

// Validate checks what can be checked without opening anything.
func (c *Config) Validate() error {
	policy, err := authz.New(c.Authz)
	if err != nil {
		return err
	}
	if err := c.Gateway.Validate(policy); err != nil {
		return err
	}
	if err := c.CA.Validate(); err != nil {
		return err
	}
	if err := c.Auth.Validate(); err != nil {
		return err
	}
	if err := oidc.ValidateProviders(c.OIDC); err != nil {
		return err
	}
	if err := c.Audit.Validate(); err != nil {
		return err
	}
	return c.Store.Validate()
}
