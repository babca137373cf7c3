// Package webui serves hearth's own web pages under /.hearth/ui/: the
// login page (password, optional TOTP, "Sign in with <provider>" links),
// logout, and a home page that shows who you are and, to a principal the
// authorizer lets use hearth:admin, the devices and the latest audit
// entries.
//
// # Trust boundary
//
// The pages are server-rendered with html/template (contextual escaping of
// every value, including device names and audit reasons an attacker may
// have chosen) and carry no script at all. The gateway (mtls) authenticates
// the request — device certificate or the session cookie — before this
// package runs and puts the principal, maybe nil, in the context; this
// package never authenticates a cookie itself. It decides nothing either:
// whether the admin sections show is authz's decision, recorded in the
// audit log before any admin data is read (fail closed). Passwords go to
// the auth service and nowhere else (never into a log, never into a URL).
package webui

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/ca"
	"github.com/hearth-home/hearth/mtls"
)

// The pages' paths.
const (
	Prefix     = "/.hearth/ui/"
	LoginPath  = "/.hearth/ui/login"
	LogoutPath = "/.hearth/ui/logout"
	// MaxFormBytes bounds a posted form (username, password, code).
	MaxFormBytes = 64 << 10
	// AuditRows is how many of the latest audit entries the home page shows.
	AuditRows = 50
)

// Logins is what the pages need of the auth service (*auth.Service).
type Logins interface {
	Login(ctx context.Context, req auth.LoginRequest) (*auth.Session, error)
	Logout(ctx context.Context, token, client string) error
}

// Devices lists the CA's devices (*ca.CA).
type Devices interface {
	ListDevices(ctx context.Context) ([]ca.Device, error)
}

// AuditTail reads the latest audit entries (*audit.Log).
type AuditTail interface {
	Tail(n int, match func(audit.Entry) bool) ([]audit.Entry, error)
}

// Options are the collaborators of the pages.
type Options struct {
	// Auth answers logins and logouts. Required.
	Auth Logins
	// Policy is the one authorizer; it decides whether the admin sections
	// show. Required.
	Policy *authz.Policy
	// Devices lists devices for the admin section; nil shows none.
	Devices Devices
	// Audit reads the latest entries for the admin section; nil shows none.
	Audit AuditTail
	// Recorder records the hearth:admin decision of a page view before
	// admin data is read (*audit.Log). Nil: audit.Discard (tests only).
	Recorder audit.Recorder
	// Household is the household's name, shown on the sign-in page.
	Household string
	// Enrollment adds phones from the Devices page and serves the page the
	// QR code opens (*ca.CA); nil shows the device list only.
	Enrollment Enrollment
	// Users serves the Users and Account pages (*auth.Service); nil hides
	// them.
	Users Users
	// AuditStatus tells the Audit page whether the log verifies and what its
	// latest checkpoint is; nil shows neither.
	AuditStatus AuditStatus
	// Passkeys offers passkey sign-in and the Account page's passkeys
	// (*auth.Service with EnablePasskeys); nil offers neither.
	Passkeys Passkeys
	// OIDCProviders are the configured OIDC providers, each shown as a
	// "Sign in with <DisplayName>" link, in this order.
	OIDCProviders []OIDCProvider
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger gets operational messages (never a password or token).
	Logger zerolog.Logger
}

// OIDCProvider is one "Sign in with …" link.
type OIDCProvider struct {
	// Name is the provider's path segment (/.hearth/v1/auth/oidc/{Name}/login).
	Name string
	// DisplayName is the text shown; default Name.
	DisplayName string
}

// UI serves the pages. Build it with New.
type UI struct {
	o    Options
	keys pageKeys
}

// New returns the pages for o.
func New(o Options) *UI {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Recorder == nil {
		o.Recorder = audit.Discard{}
	}
	o.OIDCProviders = slices.Clone(o.OIDCProviders)
	return &UI{o: o, keys: newPageKeys()}
}

// Handler serves every path under /.hearth/ui/. Mount it on the gateway's
// hearth mux: mux.Handle(webui.Prefix, ui.Handler()).
func (u *UI) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+LoginPath, u.loginPage)
	mux.HandleFunc("POST "+LoginPath, u.login)
	mux.HandleFunc("POST "+LogoutPath, u.logout)
	mux.HandleFunc("GET "+Prefix+"{$}", u.home)
	u.routes(mux)        // pages.go
	u.passkeyRoutes(mux) // passkey.go
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		u.render(w, http.StatusNotFound, "message", page{Title: "Not found", Message: "There is no such page."})
	})
	return securityHeaders(mux)
}

// securityHeaders sets the headers of every page: a CSP that allows no
// script, no frame and forms only to hearth itself (OWASP ASVS 5.0 V3.4),
// no framing (clickjacking), no caching of pages that show who you are and
// what happened (V14.3), no MIME sniffing, and no Referer to other sites.
// The referrer policy is same-origin, not no-referrer: under no-referrer
// browsers send "Origin: null" on form posts (Fetch standard, "serializing
// a request origin"), which the same-origin check must refuse.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cache-Control", "no-store")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

//go:embed templates/*.html
var templateFS embed.FS

var templates = template.Must(template.ParseFS(templateFS, "templates/*.html"))

// page is what every template gets.
type page struct {
	Title   string
	Message string
	Notice  string // a success message
	CSRF    string // the token every form carries (csrf.go)
	Nav     string // the current section, for the navigation bar
	// Household is the household's name (sign-in page).
	Household string
	// Data is the page's own content (pages.go).
	Data any
	// Passkeys: the page offers passkeys (and loads static/passkey.js).
	Passkeys bool
	// Login page.
	Providers []provider
	Username  string
	// Home page.
	Principal *authz.Principal
	Logout    bool // a session cookie is present: offer to log out
	Admin     bool
	Denied    string // why the admin sections are not shown
	Devices   []ca.Device
	Entries   []audit.Entry
}

type provider struct {
	Name string
	URL  string
}

func (u *UI) render(w http.ResponseWriter, status int, name string, p page) {
	var b strings.Builder
	if err := templates.ExecuteTemplate(&b, name, p); err != nil {
		u.o.Logger.Error().Err(err).Str("template", name).Msg("webui: rendering a page failed")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

func (u *UI) loginPage(w http.ResponseWriter, r *http.Request) {
	msg := ""
	switch r.URL.Query().Get("done") {
	case "password":
		msg = "Your new password is set. Sign in with it."
	case "signed-out":
		msg = "Your password changed and every session ended. Sign in again."
	}
	u.renderLogin(w, r, http.StatusOK, msg, "")
}

func (u *UI) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg, username string) {
	ps := make([]provider, 0, len(u.o.OIDCProviders))
	for _, op := range u.o.OIDCProviders {
		name := op.DisplayName
		if name == "" {
			name = op.Name
		}
		ps = append(ps, provider{Name: name, URL: "/.hearth/v1/auth/oidc/" + url.PathEscape(op.Name) + "/login?return=" + url.QueryEscape(Prefix)})
	}
	if u.o.Passkeys != nil {
		w.Header().Set("Content-Security-Policy", scriptCSP)
	}
	u.render(w, status, "login", page{Title: "Sign in", Message: msg, Providers: ps, Username: username,
		Household: u.o.Household, CSRF: u.csrfToken(w, r), Passkeys: u.o.Passkeys != nil})
}

// sameOrigin reports whether a state-changing request was started by a
// page of this origin: the Origin header (RFC 6454) must name this host
// over https, or, when a browser sends none, Sec-Fetch-Site must say
// same-origin. A request with neither is refused: browsers send at least
// one on a POST, and other clients use the JSON API. This stops login CSRF
// (logging a victim into the attacker's account) and forced logout
// (OWASP ASVS 5.0 V3.5.1).
func sameOrigin(r *http.Request) bool {
	if r.Host == "" {
		return false
	}
	if o := r.Header.Values("Origin"); len(o) > 0 {
		if len(o) != 1 {
			return false
		}
		scheme := "https"
		if r.TLS == nil {
			scheme = "http"
		}
		return strings.EqualFold(o[0], scheme+"://"+r.Host)
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}

// readForm parses a url-encoded body of at most MaxFormBytes; only the
// body counts (a password is never read from the URL).
func (u *UI) readForm(w http.ResponseWriter, r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	if mt, _, _ := strings.Cut(ct, ";"); !strings.EqualFold(strings.TrimSpace(mt), "application/x-www-form-urlencoded") {
		u.render(w, http.StatusUnsupportedMediaType, "message", page{Title: "Bad request", Message: "Send the form from the sign-in page."})
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxFormBytes)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			u.render(w, http.StatusRequestEntityTooLarge, "message", page{Title: "Too large", Message: "The form is too large."})
			return false
		}
		u.render(w, http.StatusBadRequest, "message", page{Title: "Bad request", Message: "The form could not be read."})
		return false
	}
	return true
}

func (u *UI) forbidden(w http.ResponseWriter) {
	u.render(w, http.StatusForbidden, "message", page{Title: "Refused", Message: "This form must be sent from hearth's own page. Reload the page and try again."})
}

// msgInvalid is the one answer to every failed sign-in: unknown user,
// wrong password, wrong or missing code, disabled user (no account
// enumeration, OWASP ASVS 5.0 V6.3.8).
const msgInvalid = "Wrong user name or password (or one-time code)."

func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	if !u.formOK(w, r) {
		return
	}
	f := r.PostForm
	sess, err := u.o.Auth.Login(r.Context(), auth.LoginRequest{
		Username: f.Get("username"),
		Password: f.Get("password"),
		TOTP:     strings.TrimSpace(f.Get("totp")),
		Client:   r.RemoteAddr,
	})
	var te *auth.ThrottledError
	switch {
	case err == nil:
	case errors.As(err, &te):
		u.renderLogin(w, r, http.StatusTooManyRequests, throttled(w, te.RetryAfter), "")
		return
	case errors.Is(err, auth.ErrBusy):
		w.Header().Set("Retry-After", "1")
		u.renderLogin(w, r, http.StatusServiceUnavailable, "hearth is busy. Try again in a moment.", "")
		return
	case errors.Is(err, auth.ErrUnavailable):
		u.renderLogin(w, r, http.StatusServiceUnavailable, "hearth cannot sign you in right now (its store or audit log is unavailable).", "")
		return
	default:
		if !errors.Is(err, auth.ErrInvalidCredentials) {
			u.o.Logger.Warn().Str("client", r.RemoteAddr).Str("error_type", errType(err)).Msg("webui: login failed")
		}
		u.renderLogin(w, r, http.StatusUnauthorized, msgInvalid, "")
		return
	}
	u.setSessionCookie(w, sess)
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

// setSessionCookie hands sess's token to the browser.
func (u *UI) setSessionCookie(w http.ResponseWriter, sess *auth.Session) {
	maxAge := int(sess.ExpiresAt.Sub(u.o.Now()) / time.Second)
	if maxAge < 1 {
		maxAge = 1
	}
	// The __Host- prefix pins the cookie to this host, Secure and Path=/
	// (RFC 6265bis §4.1.3.2); HttpOnly keeps it from scripts; SameSite=
	// Strict keeps other sites' requests from carrying it (ASVS 5.0 V3.3).
	http.SetCookie(w, &http.Cookie{
		Name: mtls.SessionCookie, Value: sess.Token, Path: "/", MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
}

// errType names an error's kind for the log without its text, which might
// quote what the user typed.
func errType(err error) string {
	var pe *auth.PolicyError
	var ce *auth.CapsError
	switch {
	case errors.As(err, &pe):
		return "password_" + pe.Rule
	case errors.As(err, &ce):
		return "scope"
	}
	return "other"
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{
		Name: mtls.SessionCookie, Value: "", Path: "/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	if !u.formOK(w, r) {
		return
	}
	c, err := r.Cookie(mtls.SessionCookie)
	if err == nil && c.Value != "" {
		err = u.o.Auth.Logout(r.Context(), c.Value, r.RemoteAddr)
		if err != nil && !errors.Is(err, auth.ErrInvalidCredentials) {
			// The token may still be live: say so rather than pretend.
			clearCookie(w)
			u.render(w, http.StatusServiceUnavailable, "message", page{Title: "Sign-out incomplete",
				Message: "hearth could not end your session (its store or audit log is unavailable); it ends by itself when it expires. Try again shortly."})
			return
		}
	}
	clearCookie(w)
	http.Redirect(w, r, LoginPath, http.StatusSeeOther)
}

func (u *UI) home(w http.ResponseWriter, r *http.Request) {
	pr := authz.PrincipalFrom(r.Context())
	if pr == nil {
		http.Redirect(w, r, LoginPath, http.StatusSeeOther)
		return
	}
	p := u.base(w, r, "Home", pr)
	p.Nav = "home"
	d, ok := u.decideAdmin(w, r, pr, "view")
	if !ok {
		return
	}
	p.Admin = d.Allow
	if !d.Allow {
		p.Denied = d.Reason()
	}
	u.render(w, http.StatusOK, "home", p)
}

func (u *UI) unavailable(w http.ResponseWriter, err error) {
	u.o.Logger.Error().Err(err).Msg("webui: reading devices or the audit log failed")
	u.render(w, http.StatusServiceUnavailable, "message", page{Title: "Unavailable", Message: "hearth's store or audit log cannot be read right now."})
}
