package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/ca"
	"github.com/hearth-home/hearth/internal/config"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// InitOptions are the choices of `hearth init`.
type InitOptions struct {
	Name        string   // household name; default "hearth"
	Hosts       []string // gateway certificate names; localhost and loopback IPs always added
	Owner       string   // owner account; default "owner"
	Listen      string   // default ":8443"
	CAListen    string   // default ":9443"
	Upstream    string   // default "http://127.0.0.1:18789"
	TrustDomain string   // default "hearth.home.arpa"
	// TrustedNetworks default to loopback and the private ranges of a home
	// network (RFC 1918, RFC 4193).
	TrustedNetworks []string
	// PublicURL is the gateway's URL as devices reach it; default
	// https://<first host>:<port> (localhost without --hosts).
	PublicURL string
	// Agent is the agent profile (config.AgentOpenClaw, the default, or
	// config.AgentSample).
	Agent  string
	Logger zerolog.Logger
	Now    func() time.Time
}

// InitResult is what init prints once: the secrets are not stored in clear.
type InitResult struct {
	Dir           string   `json:"dir"`
	Fingerprint   string   `json:"fingerprint"`
	RootCert      string   `json:"root_cert"`
	Owner         string   `json:"owner"`
	Password      string   `json:"password"`
	RecoveryCodes []string `json:"recovery_codes"`
	// Agent is the profile written; OpenClawPatch, for OpenClaw, the file
	// holding OpenClaw's side (`openclaw config patch --file …`).
	Agent         string `json:"agent"`
	OpenClawPatch string `json:"openclaw_patch,omitempty"`
}

// ErrExists means init found a data dir that is not empty.
var ErrExists = errors.New("server: the data dir already exists")

// Init creates a data dir. It builds everything in a sibling temporary
// directory and renames it into place only when complete, so that a failed
// or interrupted init leaves nothing half-written, and an existing data dir
// is refused and left untouched.
func Init(ctx context.Context, dir string, o InitOptions) (*InitResult, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Name == "" {
		o.Name = "hearth"
	}
	if o.Owner == "" {
		o.Owner = "owner"
	}
	if o.Listen == "" {
		o.Listen = ":8443"
	}
	if o.CAListen == "" {
		o.CAListen = ":9443"
	}
	if o.Upstream == "" {
		o.Upstream = "http://127.0.0.1:18789"
	}
	if o.TrustDomain == "" {
		o.TrustDomain = "hearth.home.arpa"
	}
	if len(o.TrustedNetworks) == 0 {
		o.TrustedNetworks = []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"}
	}
	if o.PublicURL == "" {
		host := "localhost"
		if len(o.Hosts) > 0 {
			host = o.Hosts[0]
		}
		o.PublicURL = "https://" + net.JoinHostPort(host, strings.TrimPrefix(portOf(o.Listen), ":"))
		o.PublicURL = strings.TrimSuffix(o.PublicURL, ":")
	}
	agent, err := config.CheckAgent(o.Agent)
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	existing, err := emptyDataDir(dir)
	if err != nil {
		return nil, err
	}
	// A new data dir is built in a sibling temporary directory and renamed
	// into place whole. An existing empty one (systemd's StateDirectory=, a
	// container volume, a mount point) cannot be replaced by rename(2) —
	// EEXIST/EBUSY, or EXDEV across filesystems — so it is built in a
	// temporary directory inside it and its entries are moved in, hearth.yaml
	// last (see moveInto).
	parent := filepath.Dir(dir)
	if existing {
		parent = dir
	} else if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".init-")
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, err
	}

	yml, err := config.Render(config.Defaults{
		Name: o.Name, Listen: o.Listen, CAListen: o.CAListen, Upstream: o.Upstream,
		TrustDomain: o.TrustDomain, TrustedNetworks: o.TrustedNetworks, PublicURL: o.PublicURL, Agent: agent,
	})
	if err != nil {
		return nil, err
	}
	cfg, err := config.Parse(yml)
	if err != nil {
		return nil, err
	}
	policy, err := authz.New(cfg.Authz)
	if err != nil {
		return nil, err
	}
	caRes, err := ca.Init(tmp, ca.InitOptions{Name: o.Name, Hosts: o.Hosts, Now: o.Now})
	if err != nil {
		return nil, err
	}
	if err := audit.InitFor(tmp, o.TrustDomain); err != nil {
		return nil, err
	}
	res := &InitResult{Dir: dir, Fingerprint: caRes.Fingerprint, RootCert: filepath.Join(dir, "ca", "root_ca.crt"), Owner: o.Owner}
	if err := func() error {
		db, err := bolt.Open(filepath.Join(tmp, StoreName), 0o600, &bolt.Options{Timeout: 2 * time.Second})
		if err != nil {
			return fmt.Errorf("server: creating the store: %w", err)
		}
		defer db.Close()
		log, err := audit.Open(tmp, cfg.Audit, audit.Options{Logger: o.Logger, Now: o.Now})
		if err != nil {
			return err
		}
		defer log.Close()
		svc, err := auth.Open(boltstore.New(db), cfg.Auth, auth.Options{Policy: policy, Audit: log, Logger: o.Logger, Now: o.Now})
		if err != nil {
			return err
		}
		defer svc.Close()
		res.Password, res.RecoveryCodes, err = svc.CreateOwner(ctx, o.Owner)
		return err
	}(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, config.FileName), yml, 0o600); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	res.Agent = agent
	if agent == config.AgentOpenClaw {
		patch, err := config.OpenClawPatch(cfg.Gateway)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(tmp, config.OpenClawPatchName), patch, 0o600); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		res.OpenClawPatch = filepath.Join(dir, config.OpenClawPatchName)
	}
	if existing {
		if err := moveInto(tmp, dir); err != nil {
			return nil, err
		}
	} else if err := os.Rename(tmp, dir); err != nil {
		// rename(2) replaces an empty directory and refuses a non-empty
		// one, so a data dir that appeared meanwhile is not overwritten.
		return nil, fmt.Errorf("%w: %s (%v)", ErrExists, dir, err)
	}
	done = true
	if rel, err := filepath.Rel(tmp, caRes.RootPEM); err == nil {
		res.RootCert = filepath.Join(dir, rel)
	}
	return res, nil
}
