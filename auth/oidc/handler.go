package oidc

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/httpx"
)

// PathPrefix is where the public handler is mounted on the hearth mux.
const PathPrefix = "/.hearth/v1/auth/oidc/"

// AdminPath is where [Handler.AdminHandler] is mounted (behind hearth:admin).
const AdminPath = "/.hearth/v1/admin/oidc/links"

// MethodOIDC is the login method recorded in audit and passed to
// Sessions.IssueSession.
const MethodOIDC = "oidc"

// Session is hearth's own token, as password login issues it.
type Session struct {
	Token        string    `json:"token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	ExpiresAt    time.Time `json:"expires_at"`
	Capabilities []string  `json:"capabilities"`
}

// Sessions issues hearth's own short-lived token. auth.Service implements it
// (through a few lines of adapter in the composition).
type Sessions interface {
	// IssueSession creates a token (and refresh token) for username exactly
	// as password login does; method is "oidc", client the client address.
	IssueSession(ctx context.Context, username, method string, mfa bool, client string) (Session, error)
}

// Sentinels an Identities implementation returns (wrapped) so that the
// handlers can answer precisely.
var (
	// ErrUnknownUser: the hearth user does not exist.
	ErrUnknownUser = errors.New("oidc: no such hearth user")
	// ErrIdentityLinked: (issuer, subject) is already linked to another user.
	ErrIdentityLinked = errors.New("oidc: identity is already linked to another user")
)

// Identities maps provider identities to hearth users. An identity is the
// pair (issuer, subject): OpenID Connect Core §5.7 — sub is unique only
// within its issuer.
type Identities interface {
	// UserForIdentity returns the user linked to (issuer, subject); ok is
	// false when there is none. err is for store faults only.
	UserForIdentity(ctx context.Context, issuer, subject string) (username string, ok bool, err error)
	// LinkIdentity links (issuer, subject) to username; idempotent for the
	// same user. Errors wrap ErrUnknownUser or ErrIdentityLinked where
	// they apply.
	LinkIdentity(ctx context.Context, username, issuer, subject string) error
}

// EmailDirectory finds the existing user with a given email address, for
// sign-up by verified email. Optional: without it, sign-up is off.
type EmailDirectory interface {
	// UserForEmail returns the user whose configured address equals email
	// (case-insensitively); ok is false when there is none.
	UserForEmail(ctx context.Context, email string) (username string, ok bool, err error)
}

// Throttle is the login throttle password logins use (auth.Service).
type Throttle interface {
	// Allow reports whether client may attempt a login as username now
	// ("" when the user is not known yet); if not, retryAfter says when.
	Allow(client, username string) (retryAfter time.Duration, ok bool)
	// Failure counts a failed attempt.
	Failure(client, username string)
	// Success resets the counters a successful login clears.
	Success(client, username string)
}

// Options are [New]'s dependencies. Sessions, Identities and Audit are
// required; every other zero value means the default stated.
type Options struct {
	Sessions   Sessions
	Identities Identities
	// Emails enables sign-up by verified email for providers that list
	// domains or addresses. Default nil: those providers are refused by New.
	Emails EmailDirectory
	// Throttle; default none (every attempt allowed). The server passes
	// auth's, so that OIDC and password logins share one budget.
	Throttle Throttle
	// Audit receives auth.login and user.change events (fail closed).
	Audit audit.Recorder
	// Logger; the zero value logs nothing.
	Logger zerolog.Logger
	// Now; default time.Now.
	Now func() time.Time
	// Rand; default crypto/rand.Reader. Used for state, nonce, PKCE
	// verifier, cookie sealing and (when CookieKey is nil) the cookie key.
	Rand io.Reader
	// HTTPClient talks to the providers; default a client with a 15 s
	// timeout that trusts the system roots.
	HTTPClient *http.Client
	// PublicURL is the gateway's external base URL, e.g.
	// https://hearth.home.arpa:8443; redirect_uri is
	// PublicURL + "/.hearth/v1/auth/oidc/{provider}/callback". Required, https.
	PublicURL string
	// CookieKey is the 32-byte AES-256-GCM key that seals the login-state
	// cookie. Default: random per process (a restart then ends logins in
	// progress). Replicas behind one name need the same key.
	CookieKey []byte
	// SignedInUser returns the user signed in on r (from the gateway's
	// principal), for the …/link flow. Default nil: …/link answers 404.
	SignedInUser func(r *http.Request) (username string, ok bool)
	// PrincipalID names who made an admin request, for the audit entry
	// (e.g. "user:local"); default "admin".
	PrincipalID func(r *http.Request) string
	// ClientAddr is the client address for throttling and audit; default
	// the host of r.RemoteAddr.
	ClientAddr func(r *http.Request) string
	// DiscoveryRetry is the least time between two discovery attempts
	// after a failure; default 30 s.
	DiscoveryRetry time.Duration
}

// Handler serves the OIDC endpoints. Create it with [New].
type Handler struct {
	opts      Options
	now       func() time.Time
	rand      io.Reader
	log       zerolog.Logger
	client    *http.Client
	throttle  Throttle
	sealer    *sealer
	spent     spentSet
	providers map[string]*remote
	order     []string
	publicURL string
	mux       *http.ServeMux
	admin     *http.ServeMux
}

// New checks the providers and options and returns the handler. It does not
// contact any provider: discovery happens on first use and is retried, so
// that hearth serves even while a provider is down.
func New(providers []Provider, opts Options) (*Handler, error) {
	if err := ValidateProviders(providers); err != nil {
		return nil, err
	}
	if opts.Sessions == nil || opts.Identities == nil || opts.Audit == nil {
		return nil, errors.New("oidc: Options.Sessions, Identities and Audit are required")
	}
	pu, err := url.Parse(opts.PublicURL)
	if len(providers) > 0 && (err != nil || pu.Scheme != "https" || pu.Host == "" || (pu.Path != "" && pu.Path != "/") || pu.RawQuery != "") {
		// __Host- cookies and a TLS-only gateway: the redirect URI is https.
		return nil, fmt.Errorf("oidc: PublicURL %q must be an https origin such as https://hearth.home.arpa:8443", opts.PublicURL)
	}
	h := &Handler{
		opts:      opts,
		now:       opts.Now,
		rand:      opts.Rand,
		log:       opts.Logger,
		client:    opts.HTTPClient,
		throttle:  opts.Throttle,
		providers: map[string]*remote{},
		publicURL: strings.TrimSuffix(opts.PublicURL, "/"),
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.rand == nil {
		h.rand = rand.Reader
	}
	if h.client == nil {
		h.client = &http.Client{Timeout: 15 * time.Second}
	}
	if h.throttle == nil {
		h.throttle = noThrottle{}
	}
	if h.opts.DiscoveryRetry <= 0 {
		h.opts.DiscoveryRetry = 30 * time.Second
	}
	key := opts.CookieKey
	if key == nil {
		key = make([]byte, 32)
		if _, err := io.ReadFull(h.rand, key); err != nil {
			return nil, fmt.Errorf("oidc: reading randomness: %w", err)
		}
	}
	if h.sealer, err = newSealer(key, h.rand); err != nil {
		return nil, err
	}
	for i := range providers {
		p := providers[i]
		if p.SignUp.Enabled() && opts.Emails == nil {
			return nil, fmt.Errorf("oidc: provider %s: signup is configured but no email directory is available", p.Name)
		}
		secret, err := p.secret(func(msg string) { h.log.Warn().Msg(msg) })
		if err != nil {
			return nil, err
		}
		h.providers[p.Name] = &remote{cfg: p, secret: secret, h: h}
		h.order = append(h.order, p.Name)
	}

	h.mux = http.NewServeMux()
	h.mux.HandleFunc("GET "+PathPrefix+"{$}", h.serveList)
	h.mux.HandleFunc("GET "+PathPrefix+"{provider}/login", h.serveLogin)
	h.mux.HandleFunc("GET "+PathPrefix+"{provider}/link", h.serveLink)
	h.mux.HandleFunc("GET "+PathPrefix+"{provider}/callback", h.serveCallback)
	h.mux.HandleFunc("GET "+PathPrefix+"{provider}/device", h.serveDeviceInfo)
	h.mux.HandleFunc("POST "+PathPrefix+"{provider}/token", h.serveToken)
	h.mux.HandleFunc(PathPrefix, func(w http.ResponseWriter, r *http.Request) {
		httpx.Error(w, http.StatusNotFound, "not_found", "no such OIDC endpoint")
	})
	h.admin = http.NewServeMux()
	h.admin.HandleFunc("POST "+AdminPath, h.serveAdminLink)
	h.admin.HandleFunc(AdminPath, func(w http.ResponseWriter, r *http.Request) {
		httpx.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
	})
	return h, nil
}

// ServeHTTP serves everything under [PathPrefix]. It needs no principal
// (except …/link, through Options.SignedInUser).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// AdminHandler serves POST [AdminPath] {username, provider, subject}: the
// owner links an identity to a user. Mount it behind hearth:admin.
func (h *Handler) AdminHandler() http.Handler { return h.admin }

type noThrottle struct{}

func (noThrottle) Allow(string, string) (time.Duration, bool) { return 0, true }
func (noThrottle) Failure(string, string)                     {}
func (noThrottle) Success(string, string)                     {}

func (h *Handler) clientAddr(r *http.Request) string {
	if h.opts.ClientAddr != nil {
		return h.opts.ClientAddr(r)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

func (h *Handler) randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(h.rand, b); err != nil {
		return "", fmt.Errorf("oidc: reading randomness: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func (h *Handler) provider(w http.ResponseWriter, r *http.Request) (*remote, bool) {
	p, ok := h.providers[r.PathValue("provider")]
	if !ok {
		httpx.Error(w, http.StatusNotFound, "unknown_provider", "no such OIDC provider")
		return nil, false
	}
	return p, true
}

// providerInfo is one entry of GET …/oidc/.
type providerInfo struct {
	Name        string `json:"name"`
	DisplayName string `json:"display_name"`
	LoginURL    string `json:"login_url"`
	DeviceFlow  bool   `json:"device_flow"`
}

// serveList lists the configured providers for the login page.
func (h *Handler) serveList(w http.ResponseWriter, r *http.Request) {
	out := []providerInfo{}
	for _, n := range h.order {
		p := h.providers[n].cfg
		dn := p.DisplayName
		if dn == "" {
			dn = p.Name
		}
		out = append(out, providerInfo{p.Name, dn, PathPrefix + p.Name + "/login", p.DeviceFlow})
	}
	httpx.JSON(w, http.StatusOK, out)
}

// serveLogin starts the authorization-code flow.
func (h *Handler) serveLogin(w http.ResponseWriter, r *http.Request) {
	h.start(w, r, purposeLogin, "")
}

// serveLink starts a flow that links the identity to the signed-in user.
func (h *Handler) serveLink(w http.ResponseWriter, r *http.Request) {
	if h.opts.SignedInUser == nil {
		httpx.Error(w, http.StatusNotFound, "not_found", "linking from the web page is not available")
		return
	}
	// Linking changes who can sign in as this user, so it must not be
	// started by another site: a page elsewhere could otherwise send a
	// browser holding a device certificate here after signing it in to the
	// attacker's provider account (account-linking CSRF). Fetch metadata
	// and Origin tell (OWASP CSRF Prevention Cheat Sheet, "Fetch Metadata").
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		httpx.Error(w, http.StatusForbidden, "cross_site", "linking must be started from hearth's own pages")
		return
	}
	if o := r.Header.Get("Origin"); o != "" && o != h.publicURL {
		httpx.Error(w, http.StatusForbidden, "cross_site", "linking must be started from hearth's own pages")
		return
	}
	user, ok := h.opts.SignedInUser(r)
	if !ok || user == "" {
		httpx.Error(w, http.StatusUnauthorized, "unauthenticated", "sign in first, then link an identity to your account")
		return
	}
	h.start(w, r, purposeLink, user)
}

func (h *Handler) start(w http.ResponseWriter, r *http.Request, purpose, linkUser string) {
	p, ok := h.provider(w, r)
	if !ok {
		return
	}
	ret, ok := SafeReturn(r.URL.Query().Get("return"))
	if !ok {
		// An open-redirect attempt is answered plainly rather than
		// silently rewritten, so a bad link is noticed.
		httpx.Error(w, http.StatusBadRequest, "bad_return", "return must be a path on this site, such as /chat")
		return
	}
	// Starting a login checks no credential, so it does not spend the
	// throttle; the callback, which does, is throttled.
	d, err := p.discover(r.Context())
	if err != nil {
		h.log.Warn().Err(err).Str("provider", p.cfg.Name).Msg("oidc: provider unavailable")
		httpx.Error(w, http.StatusServiceUnavailable, "provider_unavailable", "the identity provider cannot be reached; try again shortly")
		return
	}
	st := &flowState{Provider: p.cfg.Name, Purpose: purpose, LinkUser: linkUser, Return: ret, Expiry: h.now().Add(flowLifetime).Unix()}
	// 256 bits each: state (RFC 6749 §10.12), nonce (OIDC Core §15.5.2),
	// and a 43-character PKCE verifier (RFC 7636 §4.1).
	for _, f := range []*string{&st.State, &st.Nonce, &st.Verifier} {
		if *f, err = h.randomString(32); err != nil {
			h.log.Error().Err(err).Msg("oidc: randomness")
			httpx.Error(w, http.StatusInternalServerError, "internal", "internal error")
			return
		}
	}
	sealed, err := h.sealer.seal(st)
	if err != nil {
		h.log.Error().Err(err).Msg("oidc: sealing state")
		httpx.Error(w, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: flowCookie, Value: sealed, Path: "/", MaxAge: int(flowLifetime / time.Second),
		// Lax, not Strict: the provider's redirect back is a cross-site
		// top-level GET, which must carry this cookie.
		HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode,
	})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, d.authCodeURL(st), http.StatusFound)
}

// serveDeviceInfo tells `hearth login --oidc P` what it needs for the
// device flow. Nothing here is secret.
func (h *Handler) serveDeviceInfo(w http.ResponseWriter, r *http.Request) {
	p, ok := h.provider(w, r)
	if !ok {
		return
	}
	if !p.cfg.DeviceFlow {
		httpx.Error(w, http.StatusNotFound, "device_flow_disabled", "the device flow is not enabled for this provider")
		return
	}
	httpx.JSON(w, http.StatusOK, DeviceInfo{Issuer: p.cfg.Issuer, ClientID: p.cfg.deviceAudience(), Scopes: p.scopes()})
}

// DeviceInfo is GET …/{provider}/device: what the device flow needs.
type DeviceInfo struct {
	Issuer   string   `json:"issuer"`
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
}

// continuePage is shown after a browser login: the token is in an HttpOnly
// cookie; the page only moves on to the return path. It is a page rather
// than a 303 because browsers treat a redirect that started cross-site (at
// the provider) as cross-site, and would withhold the SameSite=Strict
// cookie on the next request.
var continuePage = template.Must(template.New("continue").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<meta name="referrer" content="no-referrer">
{{if .Return}}<meta http-equiv="refresh" content="0;url={{.Return}}">{{end}}
</head><body><p>{{.Message}}</p>{{if .Return}}<p><a href="{{.Return}}">Continue</a></p>{{end}}</body></html>
`))

func writePage(w http.ResponseWriter, status int, title, msg, ret string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_ = continuePage.Execute(w, struct{ Title, Message, Return string }{title, msg, ret})
}

func clearFlowCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: flowCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
}

func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

// refusal is a login refused, with what the client sees and what the
// audit log gets.
type refusal struct {
	status int
	code   string
	public string // client message
	reason string // audit reason
	cause  error  // log only
}

func (e *refusal) Error() string { return e.reason }

// serveCallback finishes the authorization-code flow.
func (h *Handler) serveCallback(w http.ResponseWriter, r *http.Request) {
	clearFlowCookie(w) // single use, whatever happens next
	p, ok := h.provider(w, r)
	if !ok {
		return
	}
	client := h.clientAddr(r)
	if retry, ok := h.throttle.Allow(client, ""); !ok {
		httpx.TooMany(w, retry, "too many login attempts; try again later")
		return
	}
	st, id, ref := h.callback(r, p)
	if ref != nil {
		h.refuse(w, r, p, "browser", id, ref, client)
		return
	}
	if st.Purpose == purposeLink {
		h.finishLink(w, r, p, st, id, client)
		return
	}
	h.finishLogin(w, r, p, "browser", id, client, st.Return)
}

// callback checks the cookie, the state, exchanges the code and verifies
// the ID token.
func (h *Handler) callback(r *http.Request, p *remote) (*flowState, *identity, *refusal) {
	q := r.URL.Query()
	c, err := r.Cookie(flowCookie)
	if err != nil {
		return nil, nil, &refusal{http.StatusBadRequest, "bad_state", "this login was not started in this browser, or took longer than 10 minutes; start again", "no login state cookie", err}
	}
	now := h.now()
	st, err := h.sealer.open(c.Value, now)
	if err != nil {
		return nil, nil, &refusal{http.StatusBadRequest, "bad_state", "this login was not started in this browser, or took longer than 10 minutes; start again", "login state cookie forged, expired or unreadable", err}
	}
	if st.Provider != p.cfg.Name {
		return nil, nil, &refusal{http.StatusBadRequest, "bad_state", "this login was started for another provider; start again", "login state cookie is for provider " + st.Provider, nil}
	}
	// RFC 6749 §10.12: the state binds the response to this browser;
	// compared in constant time.
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(st.State)) != 1 {
		return nil, nil, &refusal{http.StatusBadRequest, "bad_state", "the login response does not belong to this login; start again", "state mismatch", nil}
	}
	fresh, err := h.spent.spend("state:"+st.State, time.Unix(st.Expiry, 0), now)
	if err != nil {
		return nil, nil, &refusal{http.StatusServiceUnavailable, "busy", "too many logins in progress; try again shortly", "single-use memory full", err}
	}
	if !fresh {
		return nil, nil, &refusal{http.StatusBadRequest, "replayed", "this login response was already used; start again", "login state replayed", nil}
	}
	if e := q.Get("error"); e != "" {
		return nil, nil, &refusal{http.StatusUnauthorized, "provider_refused", "the identity provider did not sign you in", "provider returned error " + truncate(e, 64), nil}
	}
	code := q.Get("code")
	if code == "" || len(code) > 4096 {
		return nil, nil, &refusal{http.StatusBadRequest, "bad_request", "the login response has no code", "no code", nil}
	}
	d, err := p.discover(r.Context())
	if err != nil {
		return nil, nil, &refusal{http.StatusServiceUnavailable, "provider_unavailable", "the identity provider cannot be reached; try again shortly", "provider unavailable", err}
	}
	id, ref := d.exchange(r.Context(), code, st.Verifier, st.Nonce)
	return st, id, ref
}

// refuse answers a refused login and records it. A refusal the audit log
// cannot record becomes a 503.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, p *remote, flow string, id *identity, ref *refusal, client string) {
	ev := audit.Event{
		Name: audit.EventAuthLogin, Outcome: audit.OutcomeFailure, Reason: ref.reason, Client: r.RemoteAddr,
		Resource: "oidc:" + p.cfg.Name,
		Meta:     map[string]string{"method": MethodOIDC, "provider": p.cfg.Name, "issuer": p.cfg.Issuer, "flow": flow},
	}
	if id != nil {
		ev.Meta["subject"] = id.subject
		if id.user != "" {
			ev.Principal = "user:" + id.user
		}
	}
	if ref.status >= 500 {
		ev.Outcome = audit.OutcomeError
	}
	h.log.Info().Err(ref.cause).Str("provider", p.cfg.Name).Str("reason", ref.reason).Msg("oidc: login refused")
	if ref.status < 500 && ref.status != http.StatusTooManyRequests {
		user := ""
		if id != nil {
			user = id.user
		}
		h.throttle.Failure(client, user)
	}
	if err := h.opts.Audit.Record(r.Context(), ev); err != nil {
		h.log.Error().Err(err).Msg("oidc: audit unavailable")
		httpx.Unavailable(w)
		return
	}
	httpx.Error(w, ref.status, ref.code, ref.public)
}

// mapIdentity finds the hearth user for id: an explicit link, or sign-up
// by verified email to an existing user.
func (h *Handler) mapIdentity(ctx context.Context, p *remote, id *identity) *refusal {
	user, ok, err := h.opts.Identities.UserForIdentity(ctx, id.issuer, id.subject)
	if err != nil {
		return &refusal{http.StatusServiceUnavailable, "unavailable", "the user store cannot be read; try again shortly", "identity lookup failed", err}
	}
	if ok {
		id.user = user
		return nil
	}
	unlinked := &refusal{http.StatusForbidden, "unlinked_identity",
		fmt.Sprintf("your %s identity (subject %q) is not linked to a hearth user; the owner can link it with: hearth user link NAME --provider %s --subject %s", p.cfg.Name, id.subject, p.cfg.Name, id.subject),
		"identity not linked to any user", nil}
	if !p.cfg.SignUp.Enabled() || h.opts.Emails == nil {
		return unlinked
	}
	// Sign-up by email trusts the provider's statement that the address is
	// verified (OIDC Core §5.1 email_verified), and only for listed
	// addresses or domains; it links to an existing user, never creates one.
	if !id.emailVerified || id.email == "" || !p.cfg.SignUp.Allows(id.email) {
		unlinked.reason = "identity not linked; email not verified or not listed for sign-up"
		return unlinked
	}
	user, ok, err = h.opts.Emails.UserForEmail(ctx, id.email)
	if err != nil {
		return &refusal{http.StatusServiceUnavailable, "unavailable", "the user store cannot be read; try again shortly", "email lookup failed", err}
	}
	if !ok {
		unlinked.reason = "identity not linked; no user has the verified email"
		return unlinked
	}
	if err := h.opts.Audit.Record(ctx, audit.Event{
		Name: audit.EventUserChange, Outcome: audit.OutcomeSuccess, Principal: "user:" + user, Resource: "user:" + user,
		Reason: "identity linked by verified email at sign-up",
		Meta:   map[string]string{"action": "link_identity", "method": MethodOIDC, "provider": p.cfg.Name, "issuer": id.issuer, "subject": id.subject},
	}); err != nil {
		return &refusal{http.StatusServiceUnavailable, "unavailable", "the audit log cannot be written; try again shortly", "audit unavailable", err}
	}
	if err := h.opts.Identities.LinkIdentity(ctx, user, id.issuer, id.subject); err != nil {
		return &refusal{http.StatusServiceUnavailable, "unavailable", "the user store cannot be written; try again shortly", "linking by email failed", err}
	}
	id.user = user
	return nil
}

// finishLogin maps the identity, records the login and issues the session.
func (h *Handler) finishLogin(w http.ResponseWriter, r *http.Request, p *remote, flow string, id *identity, client, ret string) {
	ctx := r.Context()
	if ref := h.mapIdentity(ctx, p, id); ref != nil {
		h.refuse(w, r, p, flow, id, ref, client)
		return
	}
	if retry, ok := h.throttle.Allow(client, id.user); !ok {
		// The user is locked out or throttled: an OIDC login does not
		// bypass what password logins are subject to.
		if err := h.opts.Audit.Record(ctx, h.loginEvent(p, flow, id, r, audit.OutcomeFailure, "throttled or locked out")); err != nil {
			httpx.Unavailable(w)
			return
		}
		httpx.TooMany(w, retry, "too many login attempts; try again later")
		return
	}
	// Record before issuing: if the log cannot be written, nothing is
	// issued (fail closed).
	if err := h.opts.Audit.Record(ctx, h.loginEvent(p, flow, id, r, audit.OutcomeSuccess, "")); err != nil {
		h.log.Error().Err(err).Msg("oidc: audit unavailable")
		httpx.Unavailable(w)
		return
	}
	sess, err := h.opts.Sessions.IssueSession(ctx, id.user, MethodOIDC, id.mfa, client)
	if err != nil {
		h.log.Error().Err(err).Str("user", id.user).Msg("oidc: issuing session")
		_ = h.opts.Audit.Record(ctx, h.loginEvent(p, flow, id, r, audit.OutcomeError, "session could not be issued"))
		httpx.Unavailable(w)
		return
	}
	h.throttle.Success(client, id.user)
	if flow != "browser" || wantsJSON(r) {
		httpx.JSON(w, http.StatusOK, sess)
		return
	}
	maxAge := int(sess.ExpiresAt.Sub(h.now()) / time.Second)
	if maxAge < 1 {
		maxAge = 1
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: sess.Token, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	writePage(w, http.StatusOK, "Signed in", "Signed in as "+id.user+".", ret)
}

func (h *Handler) loginEvent(p *remote, flow string, id *identity, r *http.Request, outcome, reason string) audit.Event {
	return audit.Event{
		Name: audit.EventAuthLogin, Outcome: outcome, Principal: "user:" + id.user, Resource: "oidc:" + p.cfg.Name,
		Reason: reason, Client: r.RemoteAddr,
		Meta: map[string]string{"method": MethodOIDC, "provider": p.cfg.Name, "issuer": id.issuer, "subject": id.subject,
			"flow": flow, "mfa": fmt.Sprint(id.mfa)},
	}
}

// finishLink links the identity to the user who started the link flow.
func (h *Handler) finishLink(w http.ResponseWriter, r *http.Request, p *remote, st *flowState, id *identity, client string) {
	ctx := r.Context()
	// The flow cookie, sealed when LinkUser started the flow and bound to
	// this browser (__Host-, HttpOnly), already names the user. The
	// provider's redirect back is cross-site, so a SameSite=Strict session
	// cookie is not sent with it and the principal may be absent here; if
	// one is present it must be the same user.
	if h.opts.SignedInUser != nil {
		if u, ok := h.opts.SignedInUser(r); ok && subtle.ConstantTimeCompare([]byte(u), []byte(st.LinkUser)) != 1 {
			httpx.Error(w, http.StatusForbidden, "wrong_user", "this link was started by another user; sign in as that user or start again")
			return
		}
	}
	code, msg, err := h.link(ctx, st.LinkUser, p, id.issuer, id.subject, "user:"+st.LinkUser, r.RemoteAddr)
	if err != nil {
		if code == "" {
			httpx.Unavailable(w)
			return
		}
		httpx.Error(w, http.StatusConflict, code, msg)
		return
	}
	if wantsJSON(r) {
		httpx.JSON(w, http.StatusOK, map[string]string{"linked": st.LinkUser, "provider": p.cfg.Name, "subject": id.subject})
		return
	}
	writePage(w, http.StatusOK, "Linked", fmt.Sprintf("Your %s identity is now linked to %s.", p.cfg.Name, st.LinkUser), st.Return)
}

// link records and performs a link; code is "" for a 503.
func (h *Handler) link(ctx context.Context, user string, p *remote, issuer, subject, by, client string) (code, msg string, err error) {
	ev := audit.Event{
		Name: audit.EventUserChange, Outcome: audit.OutcomeSuccess, Principal: by, Resource: "user:" + user, Client: client,
		Reason: "OIDC identity linked",
		Meta:   map[string]string{"action": "link_identity", "method": MethodOIDC, "provider": p.cfg.Name, "issuer": issuer, "subject": subject},
	}
	if cur, ok, err := h.opts.Identities.UserForIdentity(ctx, issuer, subject); err != nil {
		return "", "", err
	} else if ok && cur != user {
		ev.Outcome, ev.Reason = audit.OutcomeFailure, "identity already linked to another user"
		if err := h.opts.Audit.Record(ctx, ev); err != nil {
			return "", "", err
		}
		return "already_linked", "this identity is already linked to another hearth user", ErrIdentityLinked
	}
	if err := h.opts.Audit.Record(ctx, ev); err != nil {
		return "", "", err
	}
	if err := h.opts.Identities.LinkIdentity(ctx, user, issuer, subject); err != nil {
		switch {
		case errors.Is(err, ErrUnknownUser):
			return "unknown_user", "no such user", err
		case errors.Is(err, ErrIdentityLinked):
			return "already_linked", "this identity is already linked to another hearth user", err
		}
		return "", "", err
	}
	return "", "", nil
}

// LinkRequest is POST [AdminPath].
type LinkRequest struct {
	Username string `json:"username"`
	Provider string `json:"provider"`
	Subject  string `json:"subject"`
}

// LinkResponse answers a LinkRequest.
type LinkResponse struct {
	Username string `json:"username"`
	Provider string `json:"provider"`
	Issuer   string `json:"issuer"`
	Subject  string `json:"subject"`
}

func (h *Handler) serveAdminLink(w http.ResponseWriter, r *http.Request) {
	var in LinkRequest
	if !httpx.DecodeJSON(w, r, 0, &in) {
		return
	}
	p, ok := h.providers[in.Provider]
	if !ok {
		httpx.Error(w, http.StatusBadRequest, "unknown_provider", "no such OIDC provider in hearth.yaml")
		return
	}
	// OIDC Core §2: sub is at most 255 ASCII characters.
	if in.Username == "" || in.Subject == "" || len(in.Subject) > 255 || strings.ContainsFunc(in.Subject, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		httpx.Error(w, http.StatusBadRequest, "bad_request", "username and subject (1–255 printable ASCII characters) are required")
		return
	}
	by := "admin"
	if h.opts.PrincipalID != nil {
		by = h.opts.PrincipalID(r)
	}
	code, msg, err := h.link(r.Context(), in.Username, p, p.cfg.Issuer, in.Subject, by, r.RemoteAddr)
	if err != nil {
		if code == "" {
			h.log.Error().Err(err).Msg("oidc: linking")
			httpx.Unavailable(w)
			return
		}
		status := http.StatusConflict
		if code == "unknown_user" {
			status = http.StatusNotFound
		}
		httpx.Error(w, status, code, msg)
		return
	}
	httpx.JSON(w, http.StatusOK, LinkResponse{in.Username, p.cfg.Name, p.cfg.Issuer, in.Subject})
}

func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return '?'
		}
		return c
	}, s)
}
