// Package server composes hearth's parts into the running service: it opens
// the data dir (hearth.yaml, the store, the audit log, the CA), builds the
// authorizer, the login services and the gateway, and serves the three
// listeners (gateway, CA API, admin socket) until its context ends.
//
// # Trust boundary
//
// The server wires; it decides nothing itself. Every request on the gateway
// and the admin socket reaches hearth's handlers through mtls (which
// authenticates) and, where it needs a capability, through authz.
package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/auth/oidc"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/ca"
	"github.com/hearth-home/hearth/internal/admin"
	"github.com/hearth-home/hearth/internal/config"
	"github.com/hearth-home/hearth/internal/httpx"
	"github.com/hearth-home/hearth/internal/metrics"
	"github.com/hearth-home/hearth/internal/pgaudit"
	"github.com/hearth-home/hearth/internal/pgnosql"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/boltstore"
	"github.com/hearth-home/hearth/internal/webui"
	"github.com/hearth-home/hearth/mtls"
)

// The gateway consumes the CA as its device directory and auth as its
// token authenticator; the interfaces live with the gateway, and the
// checks that the parts fit live here, where they are composed.
var (
	_ mtls.DeviceDirectory    = (*ca.CA)(nil)
	_ mtls.TokenAuthenticator = (*auth.Service)(nil)
)

// StoreName is the embedded store's file name in the data dir.
const StoreName = "hearth.db"

// Options are the command-line overrides of hearth.yaml; empty means the
// file's value.
type Options struct {
	Dir      string
	Listen   string
	CAListen string
	Upstream string
	// PublicURL is the gateway URL devices use; default https://<first host>:<port>.
	PublicURL string
	Logger    zerolog.Logger
	Now       func() time.Time
	// Ready, if set, receives the bound addresses once every listener is up.
	Ready func(Addrs)
	// MetricsListen, if set, serves Prometheus metrics over plain HTTP on
	// this address (an empty host is loopback, see metrics.ListenAddr).
	// Empty: no metrics listener, and nothing is counted.
	MetricsListen string
	// StoreDSN, if set, keeps the state in this PostgreSQL database
	// (store.driver postgres) instead of hearth.yaml's store section.
	StoreDSN string
}

// Addrs are the addresses the server is listening on.
type Addrs struct {
	Gateway string
	CA      string
	Socket  string
	Metrics string // empty without --metrics-listen
}

// Server is a running hearth.
type Server struct {
	opts  Options
	cfg   *config.Config // as started: listeners, CA, auth and audit settings
	log   zerolog.Logger
	store store.Store
	db    *bolt.DB   // the embedded store's database; nil on PostgreSQL
	audit *audit.Log // the file log; nil on PostgreSQL
	// pgAudit is the audit history replicas share on PostgreSQL; nil on
	// bbolt.
	pgAudit *pgaudit.Log
	rec     audit.Recorder   // the log, counted by metrics when they are on
	mets    *metrics.Metrics // nil without MetricsListen
	ca      *ca.CA
	auth    *auth.Service

	// live is what hearth.yaml's routes, bundles, requirements, trusted
	// networks and OIDC providers built (see reload.go); a reload swaps it
	// whole.
	live      atomic.Pointer[live]
	reloadMu  sync.Mutex // one reload at a time
	publicURL string
	cookieKey []byte // OIDC flow cookies, kept across reloads
	// sync shares hearth.yaml with the other replicas (cfgsync.go); nil
	// on bbolt.
	sync *cfgSync
}

// Open opens the data dir and builds every part, without listening yet.
func Open(opts Options) (*Server, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	dir := opts.Dir
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("server: no data dir at %s: run `hearth init --dir %s` first", dir, dir)
	}
	raw, err := readConfig(filepath.Join(dir, config.FileName))
	if err != nil {
		return nil, err
	}
	cfg, err := config.Parse(raw)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	applyOptions(cfg, opts)
	if err := cfg.Store.Validate(); err != nil { // --store-dsn too
		return nil, err
	}
	s := &Server{opts: opts, cfg: cfg, log: opts.Logger}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()

	s.cookieKey = make([]byte, 32)
	if _, err := rand.Read(s.cookieKey); err != nil {
		return nil, fmt.Errorf("server: reading randomness: %w", err)
	}

	if s.store, err = openStore(context.Background(), dir, cfg.Store, s.log); err != nil {
		return nil, err
	}
	var shared *sharedConfig
	localSum := sha256Hex(raw)
	if _, ok := s.store.(pooled); ok {
		// Replicas share hearth.yaml (cfgsync.go): the newest one in the
		// store wins over a stale local copy.
		s.sync = &cfgSync{replica: replicaName()}
		if raw, cfg, shared, err = s.adoptAtStart(context.Background(), raw, cfg); err != nil {
			return nil, err
		}
		// The store is the one opened above; a different store section
		// in the adopted file takes effect at the next restart.
		started := *cfg
		started.Store = s.cfg.Store
		s.cfg = &started
		cfg = s.cfg
	}

	// The CA and the login service are opened with a first policy; the
	// one build() makes replaces it in commit, as on every reload.
	policy, err := authz.New(cfg.Authz)
	if err != nil {
		return nil, err
	}
	if bs, ok := s.store.(*boltstore.Store); ok {
		s.db = bs.DB()
	}
	if opts.MetricsListen != "" {
		s.mets = metrics.New()
	}
	var base audit.Recorder
	if p, ok := s.store.(pooled); ok {
		// Replicas share one audit history in the store's database
		// (internal/pgaudit), signed with the data dir's audit keys,
		// which every replica holds a copy of.
		if s.pgAudit, err = pgaudit.Open(context.Background(), p.Pool(), dir, pgaudit.Options{Logger: s.log, Now: opts.Now}); err != nil {
			return nil, fmt.Errorf("server: opening the audit history in PostgreSQL: %w", err)
		}
		base = s.pgAudit
	} else {
		aopts := audit.Options{Logger: s.log, Now: opts.Now}
		if s.mets != nil {
			aopts.OnBatch = s.mets.OnBatch
		}
		if s.audit, err = audit.Open(dir, cfg.Audit, aopts); err != nil {
			return nil, err
		}
		base = s.audit
	}
	s.rec = base
	if s.mets != nil {
		s.rec = s.mets.Recorder(base, func(c string) bool {
			l := s.live.Load() // nil while Open records the configuration it starts with
			return l != nil && l.policy.Known(authz.Capability(c))
		})
	}
	s.publicURL = opts.PublicURL
	if s.publicURL == "" {
		s.publicURL = cfg.Gateway.PublicURL
	}
	if s.publicURL == "" {
		s.publicURL = "https://localhost" + portOf(cfg.Gateway.Listen)
	}
	copts := ca.Options{
		Store: s.store, Policy: policy, Audit: s.rec, Logger: s.log, Now: opts.Now, PublicURL: s.publicURL,
	}
	if p, ok := s.store.(pooled); ok {
		// The CA's own records (issued certificates, used one-time
		// tokens, ACME) in the same database, schema hearth_ca, through
		// pgnosql, whose compare-and-swap is one statement: atomic across
		// replicas, unlike smallstep's own PostgreSQL driver.
		if copts.CADB, err = pgnosql.New(p.Pool(), pgnosql.DefaultSchema); err != nil {
			return nil, fmt.Errorf("server: the CA's database in PostgreSQL: %w", err)
		}
	}
	s.ca, err = ca.Open(dir, cfg.CA, copts)
	if err != nil {
		return nil, err
	}
	s.auth, err = auth.Open(s.store, cfg.Auth, auth.Options{
		Policy: policy, Audit: s.rec, Logger: s.log, Now: opts.Now, ZoneOf: s.zoneOf,
	})
	if err != nil {
		return nil, err
	}
	// Passkeys' relying party is the public origin (WebAuthn §5.1.2).
	if err := s.auth.EnablePasskeys(s.publicURL, cfg.Name); err != nil {
		s.log.Warn().Err(err).Msg("passkeys are off")
	}
	l, err := s.build(cfg)
	if err != nil {
		if shared != nil && shared.SHA256 != localSum {
			return nil, fmt.Errorf("server: the replicas' shared hearth.yaml (version %d, published by %s, now in %s; yours is %s) does not build here: %w", shared.Version, shared.Replica, config.FileName, PreviousConfigName, err)
		}
		return nil, err
	}
	l.sum = sha256Hex(raw)
	// Which configuration the server starts with is a configuration
	// change too: an edit made while hearth was stopped shows in the log
	// as a new sha256 at the next start.
	startEv := audit.Event{
		Time: opts.Now().UTC(), Name: audit.EventConfigChange, Outcome: audit.OutcomeSuccess,
		Principal: authz.LocalPrincipalID, Resource: config.FileName, Client: "local",
		Reason: "started with this configuration", Meta: map[string]string{"via": "start", "sha256": l.sum},
	}
	if shared != nil {
		startEv.Meta["version"] = fmt.Sprint(shared.Version)
		if shared.SHA256 != localSum {
			startEv.Meta["from_replica"] = shared.Replica
			startEv.Meta["previous_sha256"] = localSum
			startEv.Reason = "started with the replicas' shared configuration, adopted over this data dir's " + config.FileName + " (kept as " + PreviousConfigName + ")"
		}
	}
	if err := s.rec.Record(context.Background(), startEv); err != nil {
		return nil, fmt.Errorf("server: recording the configuration at start: %w", err)
	}
	s.commit(l)
	if s.sync != nil {
		s.startFollowing()
	}
	if s.mets != nil {
		if err := s.registerCollectors(); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil || p == "443" {
		return ""
	}
	return ":" + p
}

func (s *Server) zoneOf(remoteAddr string) authz.Zone {
	ap, err := netip.ParseAddrPort(remoteAddr)
	var a netip.Addr
	if err == nil {
		a = ap.Addr()
	} else if a, err = netip.ParseAddr(remoteAddr); err != nil {
		return authz.ZoneRemote
	}
	a = a.Unmap()
	for _, p := range s.live.Load().trusted {
		if p.Contains(a) {
			return authz.ZoneLAN
		}
	}
	return authz.ZoneRemote
}

// hearthMux routes hearth's own /.hearth/ paths. It serves both the gateway
// (principal set by mtls, maybe nil) and the admin socket (principal local).
func (s *Server) hearthMux(l *live) http.Handler {
	mux := http.NewServeMux()
	api := l.gateway.APIHandler() // the gateway answers these itself; the socket needs them too
	mux.Handle("/.hearth/healthz", api)
	mux.Handle("/.hearth/v1/whoami", api)
	mux.Handle("/.hearth/v1/authz/check", api)
	caPublic := s.ca.PublicHandler()
	mux.Handle("/.hearth/v1/enroll", caPublic)
	mux.Handle("/.hearth/v1/renew", caPublic)
	mux.Handle("/.hearth/v1/roots.pem", caPublic)
	mux.Handle("/.hearth/v1/auth/", s.auth.Handler())
	mux.Handle("/.hearth/readyz", http.HandlerFunc(s.readyz))
	if l.oidc != nil {
		mux.Handle(oidc.PathPrefix, l.oidc)
	}
	mux.Handle("/.hearth/v1/audit/", requirePrincipal(s.auditTiles()))
	mux.Handle(webui.Prefix, s.webUI(l).Handler())
	admin := l.gateway.Require(authz.CapHearthAdmin, adminMux(s, l))
	mux.Handle("/.hearth/v1/admin/", admin)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpx.Error(w, http.StatusNotFound, "not_found", "no such hearth endpoint: "+r.URL.Path)
	})
	return mux
}

// webUI builds the web pages (/.hearth/ui/…): login, logout, who you are,
// and devices and audit entries for hearth:admin.
func (s *Server) webUI(l *live) *webui.UI {
	var providers []webui.OIDCProvider
	for _, p := range l.cfg.OIDC {
		providers = append(providers, webui.OIDCProvider{Name: p.Name, DisplayName: p.DisplayName})
	}
	tail, status := s.auditPages()
	return webui.New(webui.Options{
		Auth: s.auth, Policy: l.policy, Devices: s.ca, Audit: tail, Recorder: s.rec,
		Enrollment: s.ca, Users: s.auth, AuditStatus: status,
		Household:     l.cfg.Name,
		OIDCProviders: providers, Now: s.opts.Now, Logger: s.log,
		Passkeys: s.passkeys(),
	})
}

// passkeys is the auth service when passkeys are on, else nil.
func (s *Server) passkeys() webui.Passkeys {
	if s.auth.PasskeysEnabled() {
		return s.auth
	}
	return nil
}

func adminMux(s *Server, l *live) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/.hearth/v1/admin/devices", s.ca.AdminHandler())
	mux.Handle("/.hearth/v1/admin/devices/", s.ca.AdminHandler())
	mux.Handle("/.hearth/v1/admin/users", s.auth.AdminHandler())
	mux.Handle("/.hearth/v1/admin/users/", s.auth.AdminHandler())
	mux.Handle(audit.AdminPath, s.auditAdmin())
	if l.oidc != nil {
		mux.Handle(oidc.AdminPath, l.oidc.AdminHandler())
	}
	mux.HandleFunc("POST "+ReloadPath, s.handleReload)
	mux.HandleFunc("GET /.hearth/v1/admin/principals/{id}", s.principalInfo)
	mux.HandleFunc("POST "+BackupPath, s.serveBackup)
	mux.HandleFunc("GET "+BackupPath, s.backupPossible)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpx.Error(w, http.StatusNotFound, "not_found", "no such admin endpoint: "+r.URL.Path)
	})
	return mux
}

// principalInfo answers `hearth authz explain` with a principal's granted
// capabilities.
func (s *Server) principalInfo(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	kind, name, _ := strings.Cut(id, ":")
	var caps []authz.Capability
	var err error
	switch kind {
	case "device":
		caps, err = s.ca.DeviceCapabilities(r.Context(), name)
	case "user":
		caps, err = s.userCapabilities(r.Context(), name)
	default:
		httpx.Error(w, http.StatusBadRequest, "bad_request", "a principal is user:NAME or device:NAME")
		return
	}
	switch {
	case errors.Is(err, ca.ErrUnknownDevice), errors.Is(err, errNoSuchUser):
		httpx.Error(w, http.StatusNotFound, "not_found", "no such principal: "+id+" (see hearth device list, hearth user list)")
		return
	case err != nil:
		// The store's error is for the log, not the client (DESIGN.md:
		// 503 when the store is unavailable).
		s.log.Error().Err(err).Str("principal", id).Msg("server: looking up a principal failed")
		httpx.Unavailable(w)
		return
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"id": id, "capabilities": caps})
}

func requirePrincipal(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if authz.PrincipalFrom(r.Context()) == nil {
			httpx.Error(w, http.StatusUnauthorized, "unauthenticated", "present a device certificate or a bearer token")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Serve listens on the gateway, CA and admin socket addresses and serves
// until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	gwLn, err := net.Listen("tcp", s.cfg.Gateway.Listen)
	if err != nil {
		return fmt.Errorf("server: gateway listen %s: %w", s.cfg.Gateway.Listen, err)
	}
	caLn, err := net.Listen("tcp", s.cfg.CA.Listen)
	if err != nil {
		gwLn.Close()
		return fmt.Errorf("server: CA listen %s: %w", s.cfg.CA.Listen, err)
	}
	sockLn, err := admin.Listen(s.opts.Dir)
	if err != nil {
		gwLn.Close()
		caLn.Close()
		return err
	}
	defer os.Remove(admin.SocketPath(s.opts.Dir))
	var metLn net.Listener
	if s.mets != nil {
		addr := metrics.ListenAddr(s.opts.MetricsListen)
		if metLn, err = net.Listen("tcp", addr); err != nil {
			gwLn.Close()
			caLn.Close()
			sockLn.Close()
			return fmt.Errorf("server: metrics listen %s: %w", addr, err)
		}
	}

	// The listeners stay; every request is served by the live gateway of
	// the moment, so a reload drops no connection.
	// The gateway's certificate comes from the CA at every handshake, so
	// that it renews itself without a restart.
	tlsCfg := mtls.ServerTLSConfig(nil, s.ca.ClientCAs())
	tlsCfg.GetCertificate = s.ca.GetCertificate
	gwSrv := s.live.Load().gateway.Server(tlsCfg)
	gwSrv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.live.Load().gateway.ServeHTTP(w, r)
	})
	if s.mets != nil {
		// net/http reports failed handshakes only to ErrorLog: count them
		// there, and still log them as the gateway does.
		gwSrv.ErrorLog = log.New(s.mets.HandshakeLog(gwSrv.ErrorLog.Writer().Write), "", 0)
	}
	caSrv := &http.Server{
		Handler:           s.ca.APIHandler(),
		TLSConfig:         s.ca.APITLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          nil,
	}
	sockSrv := &http.Server{
		Handler: localClient(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.live.Load().socket.ServeHTTP(w, r)
		})),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}

	servers := []*http.Server{gwSrv, caSrv, sockSrv}
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	serve := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("server: %s: %w", name, err)
			}
		}()
	}
	serve("gateway", func() error { return gwSrv.ServeTLS(gwLn, "", "") })
	serve("ca", func() error { return caSrv.ServeTLS(caLn, "", "") })
	serve("admin socket", func() error { return sockSrv.Serve(sockLn) })
	addrs := Addrs{Gateway: gwLn.Addr().String(), CA: caLn.Addr().String(), Socket: admin.SocketPath(s.opts.Dir)}
	if metLn != nil {
		metSrv := &http.Server{Handler: s.mets.Handler(), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10, IdleTimeout: time.Minute}
		servers = append(servers, metSrv)
		serve("metrics", func() error { return metSrv.Serve(metLn) })
		addrs.Metrics = metLn.Addr().String()
		s.log.Info().Str("metrics", "http://"+addrs.Metrics+metrics.Path).Msg("serving metrics")
	}
	s.log.Info().Str("gateway", addrs.Gateway).Str("ca", addrs.CA).Str("socket", addrs.Socket).Msg("serving")
	if s.opts.Ready != nil {
		s.opts.Ready(addrs)
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutCtx)
	}
	wg.Wait()
	s.log.Info().Msg("stopped")
	return runErr
}

// Close releases the store, the log and the CA.
func (s *Server) Close() error {
	var errs []error
	s.stopFollowing()
	if s.auth != nil {
		errs = append(errs, s.auth.Close())
	}
	if s.ca != nil {
		errs = append(errs, s.ca.Close())
	}
	if s.audit != nil {
		errs = append(errs, s.audit.Close())
	}
	if s.pgAudit != nil {
		errs = append(errs, s.pgAudit.Close())
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	return errors.Join(errs...)
}

func (s *Server) userCapabilities(ctx context.Context, name string) ([]authz.Capability, error) {
	users, err := s.auth.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	for _, u := range users {
		if u.Name == name {
			return u.Capabilities, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", errNoSuchUser, name)
}

// errNoSuchUser is userCapabilities' answer for an unknown user.
var errNoSuchUser = errors.New("server: no such user")

// localClient names the admin socket's clients "local" in audit entries and
// throttling (a unix socket's peer has no address).
func localClient(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.RemoteAddr = "local"
		h.ServeHTTP(w, r)
	})
}
