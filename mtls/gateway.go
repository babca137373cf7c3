package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/httpx"
	"github.com/hearth-home/hearth/internal/ratelimit"
)

// The identity headers the gateway sets on every proxied request. A client
// never gets to send them: every header whose name starts with X-Hearth-
// (ignoring case, and with "_" read as "-", as CGI-style servers do) is
// removed first.
const (
	HeaderPrincipal    = "X-Hearth-Principal"    // "device:kitchen-pi", "user:alice"
	HeaderMethod       = "X-Hearth-Method"       // "device", "token"
	HeaderCapabilities = "X-Hearth-Capabilities" // "conversations:read,status"
)

// Defaults of GatewayOptions.
const (
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxBodyBytes      = 1 << 20
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultUpstreamTimeout   = 60 * time.Second
	DefaultRecheckInterval   = time.Second
	DefaultBodyReadTimeout   = 60 * time.Second
)

// GatewayOptions configure [NewGateway]. Zero values mean the defaults noted
// on each field.
type GatewayOptions struct {
	// Policy decides every request. Required.
	Policy *authz.Policy
	// Devices maps client certificates to devices on every request. Nil
	// means no certificate authenticates anyone.
	Devices DeviceDirectory
	// Tokens authenticates bearer tokens. Nil means no token does.
	Tokens TokenAuthenticator
	// Audit records every decision before the request proceeds. Required
	// (use audit.Discard{} only in tests).
	Audit audit.Recorder
	// Routes map agent paths to capabilities (see [Config.RouteList]).
	Routes []Route
	// Upstream is the agent. Default DefaultUpstream.
	Upstream *url.URL
	// TrustedNetworks are the lan zone. Default loopback only.
	TrustedNetworks []netip.Prefix
	// Hearth serves every path under /.hearth/ except the three the
	// gateway answers itself (healthz, whoami, authz/check). It finds the
	// principal, possibly nil, with authz.PrincipalFrom. Nil answers 404.
	Hearth http.Handler
	// Logger gets operational messages (never tokens). Zero: discard.
	Logger zerolog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// MaxHeaderBytes bounds request headers (431 beyond). Default 64 KiB.
	MaxHeaderBytes int
	// MaxBodyBytes bounds request bodies to the agent (413 beyond).
	// Default 1 MiB.
	MaxBodyBytes int64
	// ReadHeaderTimeout bounds how long a client may take to send its
	// headers (slowloris). Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections. Default 120s.
	IdleTimeout time.Duration
	// UpstreamTimeout bounds the wait for the agent's response headers
	// (504 beyond); bodies may stream for longer. Default 60s.
	UpstreamTimeout time.Duration
	// BodyReadTimeout bounds how long a client may take to send a request
	// body to the agent (408 beyond), so that a slow-drip upload cannot hold
	// a connection forever; websockets are not affected. Default 60s.
	BodyReadTimeout time.Duration
	// RecheckInterval is how often the credentials behind an open
	// websocket are checked again, so that a revoked device's websocket is
	// closed within about this long. Default 1s.
	RecheckInterval time.Duration
	// Transport reaches the agent. Default: a pooled http.Transport.
	Transport http.RoundTripper
	// AnonBurst is how many agent requests that fail authentication (401)
	// one remote client address (IPv6: its /64) may make at once before it
	// is answered 429; lan clients are never limited. Default
	// DefaultAnonBurst (20).
	AnonBurst int
	// AnonRefill is how often one more failed authentication is allowed
	// to an address over its burst. Default DefaultAnonRefill (3s).
	AnonRefill time.Duration
	// Agent is what the agent trusts from hearth (scopes header and map,
	// on-host client address, more headers to strip; see [Agent]). The
	// zero Agent sends only the X-Hearth-* headers.
	Agent Agent
	// ProbeAuditEvery is how often a probe route's requests are recorded:
	// one audit entry per route per this long, with the number left out.
	// Default DefaultProbeAuditEvery (10m).
	ProbeAuditEvery time.Duration
	// CloseGrace is how long a websocket whose credentials no longer hold
	// may take to finish the frame it is sending before hearth's close
	// frame (1008) goes out and the connection drops. Default 2s.
	CloseGrace time.Duration
}

// Gateway authenticates, authorizes, audits and proxies requests. It is an
// http.Handler; use [Gateway.Server] for a server with the right limits.
type Gateway struct {
	policy   *authz.Policy
	devices  DeviceDirectory
	tokens   TokenAuthenticator
	audit    audit.Recorder
	routes   *routeTable
	upstream *url.URL
	basePath string
	trusted  []netip.Prefix
	hearth   http.Handler
	log      zerolog.Logger
	now      func() time.Time

	maxHeader         int
	maxBody           int64
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	recheck           time.Duration
	bodyTimeout       time.Duration

	anon   *ratelimit.Limiter // failed authentications per remote address
	agent  *agentProfile
	probes *probeAudit
	grace  time.Duration
	proxy  *httputil.ReverseProxy
}

// NewGateway checks opts and builds a gateway.
func NewGateway(opts GatewayOptions) (*Gateway, error) {
	if opts.Policy == nil {
		return nil, errors.New("mtls: GatewayOptions.Policy is required")
	}
	if opts.Audit == nil {
		return nil, errors.New("mtls: GatewayOptions.Audit is required")
	}
	rt, err := compileRoutes(opts.Routes, opts.Policy)
	if err != nil {
		return nil, err
	}
	ap, err := compileAgent(opts.Agent, opts.Policy)
	if err != nil {
		return nil, err
	}
	g := &Gateway{
		agent:             ap,
		probes:            newProbeAudit(opts.ProbeAuditEvery),
		grace:             opts.CloseGrace,
		policy:            opts.Policy,
		devices:           opts.Devices,
		tokens:            opts.Tokens,
		audit:             opts.Audit,
		routes:            rt,
		upstream:          opts.Upstream,
		trusted:           opts.TrustedNetworks,
		hearth:            opts.Hearth,
		log:               opts.Logger,
		now:               opts.Now,
		maxHeader:         opts.MaxHeaderBytes,
		maxBody:           opts.MaxBodyBytes,
		readHeaderTimeout: opts.ReadHeaderTimeout,
		idleTimeout:       opts.IdleTimeout,
		recheck:           opts.RecheckInterval,
		bodyTimeout:       opts.BodyReadTimeout,
		anon:              newAnonLimiter(opts.AnonBurst, opts.AnonRefill),
	}
	if g.upstream == nil {
		g.upstream, _ = Config{}.UpstreamURL()
	}
	if g.upstream.Scheme != "http" && g.upstream.Scheme != "https" || g.upstream.Host == "" {
		return nil, fmt.Errorf("mtls: upstream %q is not an http(s) URL", g.upstream)
	}
	g.basePath = strings.TrimSuffix(g.upstream.Path, "/")
	if g.trusted == nil {
		g.trusted = DefaultTrustedNetworks()
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.maxHeader <= 0 {
		g.maxHeader = DefaultMaxHeaderBytes
	}
	if g.maxBody <= 0 {
		g.maxBody = DefaultMaxBodyBytes
	}
	if g.readHeaderTimeout <= 0 {
		g.readHeaderTimeout = DefaultReadHeaderTimeout
	}
	if g.idleTimeout <= 0 {
		g.idleTimeout = DefaultIdleTimeout
	}
	if g.recheck <= 0 {
		g.recheck = DefaultRecheckInterval
	}
	if g.bodyTimeout <= 0 {
		g.bodyTimeout = DefaultBodyReadTimeout
	}
	if g.grace <= 0 {
		g.grace = 2 * time.Second
	}
	upTimeout := opts.UpstreamTimeout
	if upTimeout <= 0 {
		upTimeout = DefaultUpstreamTimeout
	}
	tr := opts.Transport
	var covered time.Duration
	if tr == nil {
		// The transport's own ResponseHeaderTimeout bounds the wait for
		// the agent's headers at the longest timeout of any route, so that
		// requests with that timeout (usually all: routes rarely set one)
		// need no timer and context of their own (ttfbTransport).
		covered = max(upTimeout, rt.maxTimeout())
		tr = &http.Transport{
			Proxy: nil, // never an environment proxy between hearth and the agent
			DialContext: (&net.Dialer{
				Timeout:   5 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   512,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: covered,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true, // pass the client's Accept-Encoding through untouched
		}
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:      g.rewrite,
		Transport:    ttfbTransport{rt: tr, def: upTimeout, covered: covered},
		BufferPool:   bufferPool{},
		ErrorHandler: g.proxyError,
		ErrorLog:     log.New(logWriter{g.log}, "", 0),
		// FlushInterval 0: ReverseProxy flushes at once (-1) for
		// text/event-stream and for responses of unknown length, so SSE
		// and other streams reach the client as they come, while
		// fixed-length bodies are written in large chunks.
	}
	return g, nil
}

// Handler returns the gateway as an http.Handler.
func (g *Gateway) Handler() http.Handler { return g }

// Server returns an http.Server for the gateway listener with tlsConfig
// (use [ServerTLSConfig]), HTTP/1.1 and HTTP/2, header and idle timeouts and
// the header size limit. Serve it with srv.ServeTLS(ln, "", "") or
// srv.ListenAndServeTLS("", ""). There is deliberately no ReadTimeout or
// WriteTimeout: request bodies, websockets and server-sent events may last
// long; ReadHeaderTimeout stops slow-header clients (slowloris) and
// IdleTimeout reaps idle connections.
func (g *Gateway) Server(tlsConfig *tls.Config) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	return &http.Server{
		Handler:           g,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: g.readHeaderTimeout,
		IdleTimeout:       g.idleTimeout,
		MaxHeaderBytes:    g.maxHeader,
		Protocols:         &protos,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: 250,
			PingTimeout:          15 * time.Second,
			SendPingTimeout:      g.idleTimeout / 2,
		},
		ErrorLog: log.New(logWriter{g.log}, "", 0),
	}
}

// logWriter sends net/http's own messages (TLS handshake errors, mostly
// scanners) to the zerolog logger at debug level.
type logWriter struct{ l zerolog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Debug().Str("component", "http").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// credential is what a request presented, kept so that an open websocket
// can be checked again.
type credential struct {
	cert   *x509.Certificate
	token  string
	cookie bool // the token came from the browser session cookie
}

// SessionCookie is the browser session cookie that OIDC (and web) logins
// set: HttpOnly, Secure, SameSite=Strict, holding a hearth access token. It
// must equal oidc.SessionCookie.
const SessionCookie = "__Host-hearth_session"

// authFailure says why a request has no principal.
type authFailure uint8

const (
	authOK             authFailure = iota
	authNone                       // no credential presented
	authBadDevice                  // a certificate whose device is unknown, revoked or expired
	authBadToken                   // a bearer token that did not authenticate
	authUnavailable                // the directory could not answer
	authTokenMalformed             // several Authorization headers, or an empty token
)

func (f authFailure) reason() string {
	switch f {
	case authNone:
		return "no client certificate and no bearer token"
	case authBadDevice:
		return "the client certificate's device is unknown, revoked or expired"
	case authBadToken:
		return "the bearer token is invalid, expired or revoked"
	case authTokenMalformed:
		return "the Authorization header is malformed"
	case authUnavailable:
		return "the device or token store cannot be read"
	}
	return ""
}

// presented extracts the credential of r: a verified client certificate
// first (a device is its certificate), else a bearer token (RFC 6750 §2.1;
// never from the URL or the body).
func presented(r *http.Request) (credential, authFailure) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		return credential{cert: r.TLS.PeerCertificates[0]}, authOK
	}
	v := r.Header["Authorization"]
	if len(v) == 0 {
		return sessionCookie(r)
	}
	if len(v) > 1 {
		return credential{}, authTokenMalformed
	}
	tok, ok := bearer(v[0])
	if !ok && strings.EqualFold(strings.TrimSpace(v[0]), "bearer") {
		return credential{}, authTokenMalformed
	}
	if !ok {
		return credential{}, authNone
	}
	if tok == "" {
		return credential{}, authTokenMalformed
	}
	return credential{token: tok}, authOK
}

// sessionCookie takes the token of the browser session cookie. The cookie
// is SameSite=Strict, so browsers do not send it on cross-site requests; as
// defence in depth (OWASP ASVS 5.0 V3.5), an unsafe method whose
// Sec-Fetch-Site says another site started it is not authenticated by it.
func sessionCookie(r *http.Request) (credential, authFailure) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return credential{}, authNone
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
			return credential{}, authNone
		}
	}
	return credential{token: c.Value, cookie: true}, authOK
}

// withoutCookie removes the cookie named name from h's Cookie headers.
func withoutCookie(h http.Header, name string) {
	var kept []string
	for _, line := range h["Cookie"] {
		var parts []string
		for _, part := range strings.Split(line, ";") {
			k, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if k != name && strings.TrimSpace(part) != "" {
				parts = append(parts, strings.TrimSpace(part))
			}
		}
		if len(parts) > 0 {
			kept = append(kept, strings.Join(parts, "; "))
		}
	}
	if len(kept) == 0 {
		delete(h, "Cookie")
	} else {
		h["Cookie"] = kept
	}
}

// bearer returns the token of an "Authorization: Bearer x" value (the
// scheme is case-insensitive, RFC 9110 §11.1).
func bearer(v string) (string, bool) {
	const p = "bearer "
	if len(v) < len(p) || !strings.EqualFold(v[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(v[len(p):]), true
}

// authenticate turns a credential into a principal. It runs on every
// request (and periodically for open websockets): revocation takes effect
// on the next request, on any connection.
func (g *Gateway) authenticate(ctx context.Context, c credential, zone authz.Zone, now time.Time) (*authz.Principal, authFailure) {
	switch {
	case c.cert != nil:
		if now.Before(c.cert.NotBefore) || now.After(c.cert.NotAfter) || g.devices == nil {
			return nil, authBadDevice
		}
		name, caps, err := g.devices.LookupDevice(ctx, c.cert)
		if errors.Is(err, authz.ErrUnknownDevice) {
			return nil, authBadDevice
		}
		if err != nil {
			g.log.Error().Err(err).Msg("mtls: device lookup failed")
			return nil, authUnavailable
		}
		if name == "" {
			return nil, authBadDevice
		}
		return &authz.Principal{
			ID:       "device:" + name,
			Kind:     authz.KindDevice,
			Caps:     caps,
			Method:   authz.MethodDevice,
			Zone:     zone,
			AuthTime: now,
		}, authOK
	case c.token != "":
		if g.tokens == nil {
			return nil, authBadToken
		}
		p, err := g.tokens.AuthenticateToken(ctx, c.token)
		if errors.Is(err, authz.ErrInvalidToken) || err == nil && p == nil {
			return nil, authBadToken
		}
		if err != nil {
			g.log.Error().Err(err).Msg("mtls: token check failed")
			return nil, authUnavailable
		}
		// A copy: the authenticator may cache its principals.
		cp := *p
		cp.Method = authz.MethodToken
		cp.Zone = zone
		return &cp, authOK
	}
	return nil, authNone
}

// zone is lan when the real peer address (never X-Forwarded-For) is in a
// trusted network.
func (g *Gateway) zone(remote string) authz.Zone {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return authz.ZoneRemote
	}
	a := ap.Addr().Unmap().WithZone("")
	for _, p := range g.trusted {
		if p.Contains(a) {
			return authz.ZoneLAN
		}
	}
	return authz.ZoneRemote
}

// hearthHeaders matches the X-Hearth- namespace, ignoring case and reading
// "_" as "-".
var hearthHeaders = newHeaderMatcher([]string{"X-Hearth-*"})

// isHearthHeader reports whether a header name is in the X-Hearth-
// namespace.
func isHearthHeader(k string) bool { return hearthHeaders.match(k) }

func stripHearthHeaders(h http.Header) { hearthHeaders.strip(h) }

// tokenInQuery reports whether the query has an access_token or token
// parameter. RFC 6750 §2.3 allows a token in the URI only as a last resort
// and §5.3 advises against it: URLs end up in browser history, proxy and
// agent logs and Referer headers. hearth never reads a token from the URL,
// and refuses such a request (400) so that a client that tries learns at
// once instead of leaking its token on every request.
func tokenInQuery(q string) bool {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, _, _ := strings.Cut(kv, "=")
		if strings.IndexByte(k, '%') >= 0 || strings.IndexByte(k, '+') >= 0 {
			if u, err := url.QueryUnescape(k); err == nil {
				k = u
			}
		}
		if strings.EqualFold(k, "access_token") || strings.EqualFold(k, "token") {
			return true
		}
	}
	return false
}

// requestPath is the path of r as the client sent it (escaped, without the
// query): the request target for HTTP/1.1, :path for HTTP/2.
func requestPath(r *http.Request) string {
	u := r.RequestURI
	if u == "" {
		return r.URL.EscapedPath()
	}
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	return u
}

const hearthPrefix = "/.hearth/"

func isHearthPath(p string) bool {
	return strings.HasPrefix(p, hearthPrefix) || p == "/.hearth"
}

// ServeHTTP authenticates, authorizes, audits and proxies one request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	norm, err := NormalizePath(requestPath(r))
	if err != nil {
		g.log.Debug().Str("client", r.RemoteAddr).Err(err).Msg("mtls: bad path")
		httpx.Error(w, http.StatusBadRequest, "bad_path", err.Error())
		return
	}
	// Every client-supplied address and identity header goes, whatever the
	// path: hearth sets its own (ClientAddressHeaders, the agent's scopes
	// header and Agent.StripHeaders).
	g.agent.strip.strip(r.Header)
	if norm == "/.hearth/healthz" {
		setPath(r.URL, norm)
		g.healthz(w, r) // liveness needs no authentication
		return
	}
	now := g.now()
	zone := g.zone(r.RemoteAddr)
	cred, fail := presented(r)
	if g.refuseCrossSite(w, r, norm, cred) { // crosssite.go
		return
	}
	var pr *authz.Principal
	if fail == authOK {
		pr, fail = g.authenticate(r.Context(), cred, zone, now)
	}
	if isHearthPath(norm) {
		g.serveHearth(w, r, norm, pr, fail)
		return
	}
	g.serveAgent(w, r, norm, cred, pr, fail, now, zone)
}

// setPath makes u's path the normalised, escaped path norm: RawPath is
// norm itself, so the request line carries exactly what was authorized
// (url.URL.EscapedPath uses RawPath when it encodes Path).
func setPath(u *url.URL, norm string) {
	u.RawPath = norm
	if strings.IndexByte(norm, '%') < 0 {
		u.Path = norm
		return
	}
	p, err := url.PathUnescape(norm)
	if err != nil {
		// NormalizePath accepted norm, so this cannot happen; refuse to
		// guess.
		p = "/"
		u.RawPath = ""
	}
	u.Path = p
}

func (g *Gateway) serveHearth(w http.ResponseWriter, r *http.Request, norm string, pr *authz.Principal, fail authFailure) {
	if fail == authUnavailable {
		httpx.Unavailable(w)
		return
	}
	setPath(r.URL, norm)
	switch norm {
	case "/.hearth/v1/whoami":
		g.whoami(w, r, pr)
		return
	case "/.hearth/v1/authz/check":
		g.check(w, r, pr)
		return
	}
	if g.hearth == nil {
		httpx.Error(w, http.StatusNotFound, "not_found", "no such hearth endpoint")
		return
	}
	g.hearth.ServeHTTP(w, r.WithContext(authz.WithPrincipal(r.Context(), pr)))
}

// agentDenial is a refusal on the proxy path.
type agentDenial struct {
	status int
	code   string
}

func (g *Gateway) serveAgent(w http.ResponseWriter, r *http.Request, norm string, cred credential, pr *authz.Principal, fail authFailure, now time.Time, zone authz.Zone) {
	if tokenInQuery(r.URL.RawQuery) {
		// hearth's own endpoints never read a token from the URL either;
		// they are left to decide about their own query parameters (a
		// one-time enrollment link, an OIDC callback).
		httpx.Error(w, http.StatusBadRequest, "token_in_url", "a token is accepted only in the Authorization header (Bearer), never in the URL")
		return
	}
	method, upgrade, ok := requestMethod(r)
	if !ok {
		httpx.Error(w, http.StatusBadRequest, "bad_upgrade", "only websocket upgrades (RFC 6455) are proxied")
		return
	}
	m := g.routes.match(norm, method)
	if m.entry != nil && m.entry.probe {
		g.serveProbe(w, r, norm, m.node.pattern, now, zone)
		return
	}
	maxBody := g.maxBody
	if m.entry != nil && m.entry.limits.maxBody > 0 {
		maxBody = m.entry.limits.maxBody
	}
	if r.ContentLength > maxBody {
		httpx.Error(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body is larger than %d bytes", maxBody))
		return
	}
	if fail == authUnavailable {
		httpx.Unavailable(w)
		return
	}
	if pr == nil && zone != authz.ZoneLAN && !g.admitAnon(w, r, norm, fail, now, zone) {
		// Over its budget of failed authentications: 429, audited in
		// aggregate (anonlimit.go). The household's network is exempt.
		return
	}
	var c authz.Capability
	if m.entry != nil {
		c = m.entry.cap
	}
	var (
		deny   agentDenial
		reason string
		d      authz.Decision
	)
	switch {
	case pr == nil:
		deny = agentDenial{http.StatusUnauthorized, "unauthenticated"}
		reason = "not authenticated: " + fail.reason()
	case m.node == nil:
		deny = agentDenial{http.StatusForbidden, "forbidden"}
		reason = "no route maps " + method + " " + norm + " to a capability (default deny)"
	case m.entry == nil:
		deny = agentDenial{http.StatusForbidden, "forbidden"}
		reason = "route " + m.node.pattern + " does not allow " + method + " (allows " + m.node.methods() + ")"
	default:
		d = g.policy.Decide(pr, c, now)
		if !d.Allow {
			deny = agentDenial{http.StatusForbidden, "forbidden"}
		}
	}
	if reason == "" {
		reason = d.Reason()
	}
	ev := audit.Event{
		Time:     now.UTC(),
		Name:     audit.EventAuthzDecision,
		Outcome:  audit.OutcomeAllow,
		Resource: norm,
		Reason:   reason,
		Client:   r.RemoteAddr,
		Meta:     map[string]string{"method": method, "capability": string(c), "zone": string(zone)},
	}
	if deny.status != 0 {
		ev.Outcome = audit.OutcomeDeny
	}
	if m.node != nil {
		ev.Meta["route"] = m.node.pattern // the configured pattern, never the client's path
	}
	if pr != nil {
		ev.Principal = pr.ID
		ev.Meta["via"] = string(pr.Method)
	}
	if err := g.audit.Record(r.Context(), ev); err != nil {
		// Fail closed: nothing reaches the agent unless its decision is
		// in the log.
		g.log.Error().Err(err).Msg("mtls: audit record failed; refusing")
		httpx.Unavailable(w)
		return
	}
	if deny.status != 0 {
		if deny.status == http.StatusUnauthorized {
			if fail == authBadToken {
				w.Header().Set("WWW-Authenticate", `Bearer realm="hearth", error="invalid_token"`)
			} else {
				w.Header().Set("WWW-Authenticate", `Bearer realm="hearth"`)
			}
		}
		if deny.status == http.StatusUnauthorized {
			c = "" // an anonymous client learns nothing about the route table
		}
		writeDenial(w, deny.status, deny.code, reason, c)
		return
	}

	// Allowed: tell the agent who this is, and forward exactly the
	// normalised path that was authorized.
	h := r.Header
	if cred.cookie {
		withoutCookie(h, SessionCookie) // hearth's token is not the agent's business
	} else if cred.token != "" {
		delete(h, "Authorization") // hearth's token is not the agent's business
	}
	h[HeaderPrincipal] = []string{pr.ID}
	h[HeaderMethod] = []string{string(pr.Method)}
	h[HeaderCapabilities] = []string{joinCaps(pr.Caps)}
	var scopes string
	if g.agent.scopesHeader != "" {
		// Present even when empty: for OpenClaw an empty header means no
		// scopes, a missing one every operator scope.
		scopes = g.agent.scopesFor(g.policy, pr, now)
		h[g.agent.scopesHeader] = []string{scopes}
	}
	setPath(r.URL, norm)
	if m.entry.limits.timeout > 0 {
		r = r.WithContext(context.WithValue(r.Context(), ttfbKey{}, m.entry.limits.timeout))
	}
	if r.Body != nil && r.Body != http.NoBody {
		cb := &clientBody{ReadCloser: http.MaxBytesReader(w, r.Body, maxBody), limit: maxBody}
		r.Body = cb
		r = r.WithContext(context.WithValue(r.Context(), clientBodyKey{}, cb))
		// Best effort: a writer that cannot set deadlines has its own.
		_ = http.NewResponseController(w).SetReadDeadline(now.Add(g.bodyTimeout))
	}
	if upgrade || wantsEventStream(r.Header) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		r = r.WithContext(ctx)
		var ws *wsCloser
		if upgrade {
			ws = &wsCloser{}
			w = ws.wrap(w)
		}
		go g.watch(ctx, cancel, ws, cred, zone, c, scopes, r.RemoteAddr, norm)
	}
	g.proxy.ServeHTTP(w, r)
}

// requestMethod is the method routes match: MethodWebsocket for a
// websocket upgrade (a GET whose Connection lists "upgrade" and whose
// Upgrade names websocket, RFC 6455 §4.1), else r.Method. ok is false for
// an upgrade to any other protocol, which is not proxied. A plain request's
// stray Upgrade header is hop-by-hop and never reaches the agent.
func requestMethod(r *http.Request) (method string, upgrade, ok bool) {
	if !headerHasToken(r.Header["Connection"], "upgrade") || len(r.Header["Upgrade"]) == 0 {
		return r.Method, false, true
	}
	if r.Method == http.MethodGet && headerHasToken(r.Header["Upgrade"], "websocket") {
		return MethodWebsocket, true, true
	}
	return r.Method, false, false
}

// headerHasToken reports whether a comma-separated header lists token,
// ignoring ASCII case (RFC 9110 §5.6.1).
func headerHasToken(vs []string, token string) bool {
	for _, v := range vs {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// wantsEventStream reports whether the client asked for server-sent events
// (EventSource always sends "Accept: text/event-stream"): such a response
// can stay open for hours, like a websocket.
func wantsEventStream(h http.Header) bool {
	for _, v := range h["Accept"] {
		if strings.Contains(v, "text/event-stream") {
			return true
		}
	}
	return false
}

// watch checks the credential behind a long-lived exchange (a websocket, or
// a server-sent event stream) every RecheckInterval and cancels it, which
// closes both ends, when the device is revoked, the token expires or the
// capability is withdrawn.
//
// With an agent scopes header, the exchange is also closed when the
// principal's scope set is no longer the one sent at its start (a grant
// changed, or a token's trust level no longer allows as much): the agent
// fixed the session's scopes at the upgrade, and the client's reconnect
// carries the new set.
//
// A websocket (ws non-nil) gets a close frame first, status 1008 (policy
// violation, RFC 6455 §7.4.1) with the reason, so that the client learns
// why instead of seeing an abnormal closure (1006).
func (g *Gateway) watch(ctx context.Context, cancel context.CancelFunc, ws *wsCloser, cred credential, zone authz.Zone, c authz.Capability, scopes, client, path string) {
	t := time.NewTicker(g.recheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := g.now()
		pr, fail := g.authenticate(ctx, cred, zone, now)
		if fail == authUnavailable {
			continue // a store hiccup is not a revocation; the next tick decides
		}
		var reason, id, short string
		if pr == nil {
			reason, short = "connection closed: "+fail.reason(), fail.reason()
		} else if d := g.policy.Decide(pr, c, now); !d.Allow {
			reason, id, short = "connection closed: "+d.Reason(), pr.ID, d.Reason()
		} else if g.agent.scopesHeader != "" && g.agent.scopesFor(g.policy, pr, now) != scopes {
			short = "the principal's agent scopes changed; reconnect"
			reason, id = "connection closed: "+short, pr.ID
		} else {
			continue
		}
		g.log.Info().Str("client", client).Str("path", path).Msg("mtls: closing an upgraded connection whose credentials no longer hold")
		// Best effort: the connection closes whether or not this is logged.
		_ = g.audit.Record(context.WithoutCancel(ctx), audit.Event{
			Time: now.UTC(), Name: audit.EventAuthzDecision, Outcome: audit.OutcomeDeny,
			Principal: id, Resource: path, Reason: reason, Client: client,
			Meta: map[string]string{"capability": string(c), "zone": string(zone), "upgrade": "closed"},
		})
		if ws != nil {
			ws.close(closePolicyViolation, "hearth: "+short, g.grace)
		}
		cancel()
		return
	}
}

// rewrite runs after ReverseProxy removed hop-by-hop headers (including
// those a client named in Connection:) and X-Forwarded-*, so the identity
// headers set here cannot be dropped by a "Connection: X-Hearth-Principal"
// trick.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	out := pr.Out
	out.URL.Scheme = g.upstream.Scheme
	out.URL.Host = g.upstream.Host
	if g.basePath != "" {
		setPath(out.URL, g.basePath+pr.In.URL.RawPath)
	}
	out.Host = ""
	for _, k := range [...]string{HeaderPrincipal, HeaderMethod, HeaderCapabilities, g.agent.scopesHeader} {
		if v, ok := pr.In.Header[k]; ok && k != "" {
			out.Header[k] = v
		}
	}
	if host, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		out.Header["X-Forwarded-For"] = []string{g.agent.forwardedFor(host)}
	}
	out.Header["X-Forwarded-Proto"] = forwardedProto(pr.In)
	if pr.In.Host != "" {
		out.Header["X-Forwarded-Host"] = []string{pr.In.Host}
	}
}

var (
	protoHTTPS = []string{"https"}
	protoHTTP  = []string{"http"}
)

func forwardedProto(r *http.Request) []string {
	if r.TLS != nil {
		return protoHTTPS
	}
	return protoHTTP
}

func joinCaps(cs []authz.Capability) string {
	switch len(cs) {
	case 0:
		return ""
	case 1:
		return string(cs[0])
	}
	n := len(cs) - 1
	for _, c := range cs {
		n += len(c)
	}
	var b strings.Builder
	b.Grow(n)
	for i, c := range cs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(string(c))
	}
	return b.String()
}

// clientBody marks errors that come from reading the client's request
// body, and remembers the first, so that proxyError does not blame the
// agent for them (the server may report them only as a canceled context).
type clientBody struct {
	io.ReadCloser
	limit  int64 // the route's body limit, for the 413 message
	failed atomic.Pointer[clientBodyError]
}

// clientBodyKey finds a request's clientBody from the proxy's error
// handler, which sees the outgoing request with a wrapped body.
type clientBodyKey struct{}

// clientBodyError is a failure to read the client's body.
type clientBodyError struct{ err error }

func (e clientBodyError) Error() string { return "mtls: reading the request body: " + e.err.Error() }
func (e clientBodyError) Unwrap() error { return e.err }

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		e := clientBodyError{err}
		b.failed.CompareAndSwap(nil, &e)
		err = e
	}
	return n, err
}

// proxyError answers a failed exchange: 413 for a body over the limit, 408
// for a client too slow to send its body, 400 for another broken body, 504
// for an agent that does not answer in time, 502 otherwise, as JSON.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	var cbe clientBodyError
	var ne net.Error
	limit := g.maxBody
	if b, ok := r.Context().Value(clientBodyKey{}).(*clientBody); ok {
		limit = b.limit
		if e := b.failed.Load(); e != nil {
			err = *e
		}
	}
	switch {
	case errors.As(err, &mbe):
		httpx.Error(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body is larger than %d bytes", limit))
	case errors.As(err, &cbe):
		if errors.As(cbe.err, &ne) && ne.Timeout() {
			httpx.Error(w, http.StatusRequestTimeout, "timeout", "the request body did not arrive in time")
			return
		}
		httpx.Error(w, http.StatusBadRequest, "bad_request", "the request body could not be read")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away (or a watched websocket was closed).
		w.WriteHeader(http.StatusBadGateway)
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		g.log.Warn().Err(err).Msg("mtls: upstream timed out")
		httpx.Error(w, http.StatusGatewayTimeout, "upstream_timeout", "the agent did not answer in time")
	default:
		g.log.Warn().Err(err).Msg("mtls: upstream failed")
		httpx.Error(w, http.StatusBadGateway, "upstream_unavailable", "the agent cannot be reached")
	}
}

// writeDenial writes {"error", "code", "capability"}.
func writeDenial(w http.ResponseWriter, status int, code, msg string, c authz.Capability) {
	httpx.JSON(w, status, struct {
		Error      string `json:"error"`
		Code       string `json:"code"`
		Capability string `json:"capability"`
	}{msg, code, string(c)})
}

// bufferPool reuses ReverseProxy's copy buffers.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(copyBuffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
