package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/auth/oidc"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/config"
	"github.com/hearth-home/hearth/internal/httpx"
	"github.com/hearth-home/hearth/mtls"
)

// ReloadPath is the admin endpoint `hearth reload` posts to.
const ReloadPath = "/.hearth/v1/admin/reload"

// live is everything hearth.yaml's routes, bundles, requirements, trusted
// networks and OIDC providers build. It is made by one constructor,
// [Server.build], from a whole validated Config, and swapped whole
// (atomic.Pointer) by a reload: a request sees the old configuration or the
// new one, never a mix, and whatever a later change adds to the gateway's
// options comes along through mtls.NewGateway without touching the reload.
type live struct {
	cfg     *config.Config
	sum     string // SHA-256 of the hearth.yaml bytes, hex
	policy  *authz.Policy
	trusted []netip.Prefix
	gateway *mtls.Gateway
	oidc    *oidc.Handler
	mux     http.Handler // hearth's own paths, for the gateway and the socket
	socket  http.Handler // the admin socket: mux with the local principal
}

// applyOptions puts the command-line overrides and the listeners' defaults
// into cfg, on start and on every reload alike.
func applyOptions(cfg *config.Config, opts Options) {
	if opts.Listen != "" {
		cfg.Gateway.Listen = opts.Listen
	}
	if opts.CAListen != "" {
		cfg.CA.Listen = opts.CAListen
	}
	if opts.Upstream != "" {
		cfg.Gateway.Upstream = opts.Upstream
	}
	if opts.StoreDSN != "" {
		cfg.Store = config.Store{Driver: config.DriverPostgres, DSN: opts.StoreDSN}
	}
	if cfg.Gateway.Listen == "" {
		cfg.Gateway.Listen = ":8443"
	}
	if cfg.CA.Listen == "" {
		cfg.CA.Listen = ":9443"
	}
	if cfg.Gateway.Upstream == "" {
		cfg.Gateway.Upstream = mtls.DefaultUpstream
	}
}

// build makes the live part of the server from cfg, which Validate has
// accepted. It opens nothing and changes nothing that is running.
func (s *Server) build(cfg *config.Config) (*live, error) {
	l := &live{cfg: cfg}
	var err error
	if l.policy, err = authz.New(cfg.Authz); err != nil {
		return nil, err
	}
	if l.trusted, err = cfg.Gateway.Networks(); err != nil {
		return nil, err
	}
	upstream, err := cfg.Gateway.UpstreamURL()
	if err != nil {
		return nil, err
	}
	if len(cfg.OIDC) > 0 {
		if l.oidc, err = newOIDC(s, cfg.OIDC, s.publicURL); err != nil {
			return nil, err
		}
	}
	l.gateway, err = mtls.NewGateway(mtls.GatewayOptions{
		Policy:          l.policy,
		Devices:         s.ca,
		Tokens:          s.auth,
		Audit:           s.rec,
		Routes:          cfg.Gateway.Routes,
		Upstream:        upstream,
		TrustedNetworks: l.trusted,
		Agent:           cfg.Gateway.Agent,
		Hearth:          http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { l.mux.ServeHTTP(w, r) }),
		Logger:          s.log,
		Now:             s.opts.Now,
	})
	if err != nil {
		return nil, err
	}
	l.mux = s.hearthMux(l)
	l.socket = mtls.LocalPrincipal(l.policy, s.opts.Now, l.mux)
	return l, nil
}

// commit makes l the live configuration: the gateway and the socket serve
// their next request with it, and new grants, logins and scopes expand
// under its policy.
func (s *Server) commit(l *live) {
	s.live.Store(l)
	s.ca.SetPolicy(l.policy)
	s.auth.SetPolicy(l.policy)
}

// ErrConfigRefused wraps the reason a reload refused hearth.yaml; the
// running configuration is kept.
var ErrConfigRefused = errors.New("server: the new hearth.yaml was refused; the running configuration is kept")

// ReloadResult says what a reload applied.
type ReloadResult struct {
	// SHA256 is the hex SHA-256 of the hearth.yaml that was read.
	SHA256 string `json:"sha256"`
	// Changed is true when the file differs from the running one.
	Changed bool `json:"changed"`
	// RestartNeeded lists the settings that changed but take effect only
	// when `hearth serve` restarts (listeners, CA, logins, audit).
	RestartNeeded []string `json:"restart_needed,omitempty"`
	// Version is the version of the replicas' shared hearth.yaml this
	// file now is (PostgreSQL only; 0 on bbolt).
	Version int64 `json:"version,omitempty"`
}

// Reload reads hearth.yaml again and, if it parses, validates and builds,
// swaps it in; otherwise the running configuration is kept and the error
// wraps ErrConfigRefused. Either way a config.change entry records it
// (by names the principal, via how the reload was asked for: "signal" or
// "socket"), and nothing is applied unless its entry is in the log. Open
// connections stay up: the listeners are not touched.
func (s *Server) Reload(ctx context.Context, by, via string) (*ReloadResult, error) {
	return s.reload(ctx, by, via, "local")
}

// reload is Reload for a request from client (an address, or "local").
// On PostgreSQL the file, once it builds, is published to the other
// replicas (cfgsync.go) before it is applied here; if it cannot be
// published the running configuration is kept, so that replicas do not
// silently diverge.
func (s *Server) reload(ctx context.Context, by, via, client string) (*ReloadResult, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	ev := s.configEvent(by, via, client)
	b, err := readConfig(filepath.Join(s.opts.Dir, config.FileName))
	if err != nil {
		return s.refuse(ctx, ev, err)
	}
	var version int64
	var publish func(*config.Config) error
	if s.sync != nil {
		publish = func(*config.Config) error {
			rec, err := s.publish(ctx, b, sha256Hex(b), by, false)
			if err != nil {
				return err
			}
			version = rec.Version
			ev.Meta["version"] = strconv.FormatInt(version, 10)
			return nil
		}
	}
	res, err := s.apply(ctx, ev, b, publish)
	if err == nil && s.sync != nil {
		res.Version = version
		s.sync.applied = version
		s.sync.refused.Store(nil)
	}
	return res, err
}

// refuse records ev as a refused reload for err and returns an error
// wrapping ErrConfigRefused.
func (s *Server) refuse(ctx context.Context, ev audit.Event, err error) (*ReloadResult, error) {
	ev.Outcome = audit.OutcomeFailure
	ev.Reason = "refused, running configuration kept: " + bounded(err.Error(), 1024)
	if aerr := s.rec.Record(ctx, ev); aerr != nil {
		return nil, fmt.Errorf("server: recording the refused reload: %w", aerr)
	}
	s.log.Warn().Err(err).Str("via", ev.Meta["via"]).Msg("reload refused; the running configuration is kept")
	return nil, fmt.Errorf("%w: %w", ErrConfigRefused, err)
}

// apply is the reload path, for a file read here and for one another
// replica published alike (reloadMu held): b must parse, validate and
// build, or it is refused with the running configuration kept; then
// prepare (if set) runs — publishing it, or writing it to the data dir —
// and a failure there keeps the running configuration too (recorded, but
// not as a refusal of the file); then ev records the change, and nothing
// is applied unless its entry is in the log.
func (s *Server) apply(ctx context.Context, ev audit.Event, b []byte, prepare func(*config.Config) error) (*ReloadResult, error) {
	old := s.live.Load()
	res := &ReloadResult{SHA256: sha256Hex(b)}
	ev.Meta["sha256"] = res.SHA256
	cfg, err := config.Parse(b)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		return s.refuse(ctx, ev, err)
	}
	applyOptions(cfg, s.opts)
	l, err := s.build(cfg)
	if err != nil {
		return s.refuse(ctx, ev, err)
	}
	if prepare != nil {
		if err := prepare(cfg); err != nil {
			ev.Outcome = audit.OutcomeFailure
			ev.Reason = "not applied, running configuration kept: " + bounded(err.Error(), 1024)
			if aerr := s.rec.Record(ctx, ev); aerr != nil {
				return nil, errors.Join(err, fmt.Errorf("server: recording the failed reload: %w", aerr))
			}
			s.log.Error().Err(err).Str("via", ev.Meta["via"]).Msg("reload not applied; the running configuration is kept")
			return nil, err
		}
	}
	l.sum = res.SHA256
	res.Changed = res.SHA256 != old.sum
	res.RestartNeeded = restartNeeded(s.cfg, cfg)
	ev.Outcome = audit.OutcomeSuccess
	ev.Reason = "applied routes, bundles, requirements, trusted networks and OIDC providers"
	if ev.Meta["via"] == "replica" {
		ev.Reason += " as published by replica " + ev.Meta["from_replica"]
	}
	if len(res.RestartNeeded) > 0 {
		ev.Meta["restart_needed"] = strings.Join(res.RestartNeeded, ",")
		ev.Reason += "; a restart applies " + ev.Meta["restart_needed"]
	}
	if err := s.rec.Record(ctx, ev); err != nil {
		// Fail closed: a change the log does not hold is not made.
		return nil, fmt.Errorf("server: recording the reload: %w", err)
	}
	s.commit(l)
	s.log.Info().Str("sha256", res.SHA256).Bool("changed", res.Changed).Strs("restart_needed", res.RestartNeeded).Str("via", ev.Meta["via"]).Str("from_replica", ev.Meta["from_replica"]).Msg("configuration reloaded")
	return res, nil
}

// restartNeeded names the sections of next that differ from what the
// server started with and that a reload does not apply.
func restartNeeded(started, next *config.Config) []string {
	var out []string
	if started.Name != next.Name {
		out = append(out, "name")
	}
	if started.Gateway.Listen != next.Gateway.Listen {
		out = append(out, "gateway.listen")
	}
	for name, pair := range map[string][2]any{
		"ca": {started.CA, next.CA}, "auth": {started.Auth, next.Auth}, "audit": {started.Audit, next.Audit},
		"store": {started.Store, next.Store},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func readConfig(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, config.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: reading %s: %w", path, err)
	}
	return b, nil
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func bounded(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// handleReload answers POST /.hearth/v1/admin/reload (hearth:admin; the
// admin socket is local): 200 with what was applied, 400 config_invalid
// with the reason when the file is refused, 503 when the log cannot record
// the change.
func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	by := authz.LocalPrincipalID
	via := "socket"
	if p := authz.PrincipalFrom(r.Context()); p != nil {
		by = p.ID
		if p.Method != authz.MethodLocal {
			via = "gateway"
		}
	}
	res, err := s.reload(r.Context(), by, via, r.RemoteAddr)
	switch {
	case errors.Is(err, ErrConfigRefused):
		httpx.Error(w, http.StatusBadRequest, "config_invalid", err.Error()+" (run `hearth config check` for every problem with its line)")
	case err != nil:
		s.log.Error().Err(err).Msg("server: reload could not be recorded")
		httpx.Unavailable(w)
	default:
		httpx.JSON(w, http.StatusOK, res)
	}
}
