package webui

// Passkeys in the pages: "Sign in with a passkey" and a passkey as the
// second factor on the sign-in page, and add, rename, list and remove on
// the Account page. WebAuthn needs script (navigator.credentials), so the
// pages that offer it load static/passkey.js from hearth itself and allow
// script and fetch from 'self' only; the JSON endpoints it calls are
// guarded like every form: same origin, the CSRF token, a bounded body.

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/httpx"
)

// Passkeys is what the pages need of the auth service's passkeys
// (*auth.Service).
type Passkeys interface {
	BeginPasskeyLogin(ctx context.Context, username string) (*auth.PasskeyOptions, error)
	FinishPasskeyLogin(ctx context.Context, id string, body []byte, client string) (*auth.Session, error)
	BeginPasskeySecondFactor(ctx context.Context, username string) (*auth.PasskeyOptions, error)
	FinishPasskeySecondFactor(ctx context.Context, id string, req auth.LoginRequest, body []byte) (*auth.Session, error)
	BeginPasskeyRegistration(ctx context.Context, name string, authTime time.Time) (*auth.PasskeyOptions, error)
	FinishPasskeyRegistration(ctx context.Context, name, id, label string, body []byte, client string) (*auth.PasskeyInfo, error)
	Passkeys(ctx context.Context, name string) ([]auth.PasskeyInfo, error)
	RenamePasskey(ctx context.Context, name, id, label, client string) error
	RemovePasskey(ctx context.Context, name, id, client string) error
}

// The passkey endpoints the page script calls.
const (
	PasskeyLoginOptions    = Prefix + "passkey/login/options"
	PasskeyLoginFinish     = Prefix + "passkey/login/finish"
	PasskeySecondOptions   = Prefix + "passkey/second/options"
	PasskeySecondFinish    = Prefix + "passkey/second/finish"
	PasskeyRegisterOptions = Prefix + "account/passkey/options"
	PasskeyRegisterFinish  = Prefix + "account/passkey/finish"
)

// scriptCSP is the CSP of a page that offers passkeys: script and fetch
// from hearth itself, nothing else (OWASP ASVS 5.0 V3.4.3).
const scriptCSP = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"

// passkeyBody is every passkey call's JSON.
type passkeyBody struct {
	CSRF       string          `json:"csrf"`
	Username   string          `json:"username,omitempty"`
	Password   string          `json:"password,omitempty"`
	Ceremony   string          `json:"ceremony,omitempty"`
	Label      string          `json:"label,omitempty"`
	Credential json.RawMessage `json:"credential,omitempty"`
}

func (u *UI) passkeyRoutes(mux *http.ServeMux) {
	if u.o.Passkeys == nil {
		return
	}
	mux.HandleFunc("POST "+PasskeyLoginOptions, u.passkeyJSON(func(w http.ResponseWriter, r *http.Request, b *passkeyBody) (any, error) {
		return u.o.Passkeys.BeginPasskeyLogin(r.Context(), b.Username)
	}))
	mux.HandleFunc("POST "+PasskeyLoginFinish, u.passkeyJSON(func(w http.ResponseWriter, r *http.Request, b *passkeyBody) (any, error) {
		sess, err := u.o.Passkeys.FinishPasskeyLogin(r.Context(), b.Ceremony, b.Credential, r.RemoteAddr)
		return u.signedIn(w, sess, err)
	}))
	mux.HandleFunc("POST "+PasskeySecondOptions, u.passkeyJSON(func(w http.ResponseWriter, r *http.Request, b *passkeyBody) (any, error) {
		return u.o.Passkeys.BeginPasskeySecondFactor(r.Context(), b.Username)
	}))
	mux.HandleFunc("POST "+PasskeySecondFinish, u.passkeyJSON(func(w http.ResponseWriter, r *http.Request, b *passkeyBody) (any, error) {
		sess, err := u.o.Passkeys.FinishPasskeySecondFactor(r.Context(), b.Ceremony,
			auth.LoginRequest{Username: b.Username, Password: b.Password, Client: r.RemoteAddr}, b.Credential)
		return u.signedIn(w, sess, err)
	}))
	mux.HandleFunc("POST "+PasskeyRegisterOptions, u.passkeyJSON(func(w http.ResponseWriter, r *http.Request, b *passkeyBody) (any, error) {
		name, pr, err := selfName(r)
		if err != nil {
			return nil, err
		}
		return u.o.Passkeys.BeginPasskeyRegistration(r.Context(), name, pr)
	}))
	mux.HandleFunc("POST "+PasskeyRegisterFinish, u.passkeyJSON(func(w http.ResponseWriter, r *http.Request, b *passkeyBody) (any, error) {
		name, _, err := selfName(r)
		if err != nil {
			return nil, err
		}
		info, err := u.o.Passkeys.FinishPasskeyRegistration(r.Context(), name, b.Ceremony, b.Label, b.Credential, r.RemoteAddr)
		if err != nil {
			return nil, err
		}
		return map[string]any{"passkey": info, "redirect": AccountPath + "?done=passkey-add"}, nil
	}))
}

var errNoUser = errors.New("webui: not signed in with a user account")

// selfName is the signed-in user's name and authentication time.
func selfName(r *http.Request) (string, time.Time, error) {
	pr := authz.PrincipalFrom(r.Context())
	if pr == nil {
		return "", time.Time{}, errNoUser
	}
	name, ok := strings.CutPrefix(pr.ID, "user:")
	if !ok || pr.Kind != "user" {
		return "", time.Time{}, errNoUser
	}
	return name, pr.AuthTime, nil
}

// signedIn sets the session cookie of sess and answers where to go.
func (u *UI) signedIn(w http.ResponseWriter, sess *auth.Session, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	u.setSessionCookie(w, sess)
	return map[string]string{"redirect": Prefix}, nil
}

// passkeyJSON wraps a passkey endpoint: same origin, a JSON body of at
// most MaxPasskeyBody plus room for the rest, the CSRF token, and errors
// as {"error", "code"} with the status DESIGN.md lists.
func (u *UI) passkeyJSON(fn func(w http.ResponseWriter, r *http.Request, b *passkeyBody) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !sameOrigin(r) {
			httpx.Error(w, http.StatusForbidden, "cross_site", "this request must come from hearth's own page")
			return
		}
		var b passkeyBody
		if !httpx.DecodeJSON(w, r, auth.MaxPasskeyBody+8<<10, &b) {
			return
		}
		c, err := r.Cookie(csrfCookie)
		if err != nil || !validCSRFCookie(c.Value) || b.CSRF == "" || !hmac.Equal([]byte(b.CSRF), []byte(u.csrfMAC(c.Value))) {
			httpx.Error(w, http.StatusForbidden, "csrf", "reload the page and try again")
			return
		}
		out, err := fn(w, r, &b)
		if err != nil {
			u.passkeyErr(w, r, err)
			return
		}
		httpx.JSON(w, http.StatusOK, out)
	}
}

func (u *UI) passkeyErr(w http.ResponseWriter, r *http.Request, err error) {
	var te *auth.ThrottledError
	switch {
	case errors.As(err, &te):
		httpx.TooMany(w, te.RetryAfter, "too many attempts; try again later")
	case errors.Is(err, auth.ErrInvalidCredentials):
		httpx.Error(w, http.StatusUnauthorized, "invalid_credentials", "that passkey, user name or password did not work")
	case errors.Is(err, errNoUser):
		httpx.Error(w, http.StatusUnauthorized, "not_signed_in", "sign in with your user account first")
	case errors.Is(err, auth.ErrNotSelf):
		httpx.Error(w, http.StatusForbidden, "not_self", "only the account's owner can add a passkey to it")
	case errors.Is(err, auth.ErrStaleLogin):
		httpx.Error(w, http.StatusForbidden, "fresh_login", "adding a passkey needs a sign-in from the last 5 minutes: sign out, sign in again and come back")
	case errors.Is(err, auth.ErrNoPasskey):
		httpx.Error(w, http.StatusBadRequest, "no_passkey", "this account has no passkey: sign in with your password and one-time code")
	case errors.Is(err, auth.ErrTooManyPasskeys):
		httpx.Error(w, http.StatusConflict, "too_many", "you have the most passkeys hearth keeps; remove one first")
	case errors.Is(err, auth.ErrPasskeyRefused):
		httpx.Error(w, http.StatusBadRequest, "passkey_refused", strings.TrimPrefix(err.Error(), "auth: "))
	case errors.Is(err, auth.ErrPasskeysOff):
		httpx.Error(w, http.StatusNotFound, "passkeys_off", "passkeys are not enabled on this hearth")
	case errors.Is(err, auth.ErrBusy):
		w.Header().Set("Retry-After", "1")
		httpx.Error(w, http.StatusServiceUnavailable, "busy", "hearth is busy; try again in a moment")
	default:
		if !errors.Is(err, auth.ErrUnavailable) {
			u.o.Logger.Error().Err(err).Str("path", r.URL.Path).Msg("webui: passkey request failed")
		}
		httpx.Unavailable(w)
	}
}
