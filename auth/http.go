package auth

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/httpx"
)

// The public message of every failed credential check: the same for an
// unknown user, a wrong password or code, a disabled user and (once the
// attempt is let through) a locked one.
const msgInvalid = "username, password or code is wrong"

// loginBody is POST /.hearth/v1/auth/login.
type loginBody struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	TOTP     string   `json:"totp,omitempty"`
	Scope    []string `json:"scope,omitempty"`
}

// loginAnswer is the answer to a login or refresh.
type loginAnswer struct {
	Token            string             `json:"token"`
	RefreshToken     string             `json:"refresh_token"`
	ExpiresAt        time.Time          `json:"expires_at"`
	RefreshExpiresAt time.Time          `json:"refresh_expires_at"`
	Capabilities     []authz.Capability `json:"capabilities"`
	User             string             `json:"user"`
	MFA              bool               `json:"mfa"`
}

func answer(s *Session) loginAnswer {
	caps := s.Capabilities
	if caps == nil {
		caps = []authz.Capability{}
	}
	return loginAnswer{s.Token, s.RefreshToken, s.ExpiresAt, s.RefreshExpiresAt, caps, s.User, s.MFA}
}

// Handler serves hearth's public auth API:
//
//	POST /.hearth/v1/auth/login     {username, password, totp?, scope?} → {token, refresh_token, expires_at, capabilities}
//	POST /.hearth/v1/auth/refresh   {refresh_token} → a new pair (single use; reuse ends the family)
//	POST /.hearth/v1/auth/logout    Authorization: Bearer → 204, the token's family revoked
//	POST /.hearth/v1/auth/recover   {username, recovery_code, new_password} → 204
//	POST /.hearth/v1/auth/reset     {username, reset_code, new_password} → 204
//	POST /.hearth/v1/auth/password  Authorization: Bearer, {old_password, new_password, totp?} → 204
//
// Every handler reads the bearer token itself where it needs one, so it
// works whether or not the gateway authenticated the request.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /.hearth/v1/auth/login", s.handleLogin)
	mux.HandleFunc("POST /.hearth/v1/auth/refresh", s.handleRefresh)
	mux.HandleFunc("POST /.hearth/v1/auth/logout", s.handleLogout)
	mux.HandleFunc("POST /.hearth/v1/auth/recover", s.handleRecover)
	mux.HandleFunc("POST /.hearth/v1/auth/reset", s.handleReset)
	mux.HandleFunc("POST /.hearth/v1/auth/password", s.handlePassword)
	mux.HandleFunc("/.hearth/v1/auth/", func(w http.ResponseWriter, r *http.Request) {
		httpx.Error(w, http.StatusNotFound, "not_found", "no such auth endpoint (or wrong method)")
	})
	return mux
}

// writeErr maps the package's errors to statuses (DESIGN.md).
func (s *Service) writeErr(w http.ResponseWriter, err error) {
	var te *ThrottledError
	var pe *PolicyError
	var ce *CapsError
	switch {
	case errors.As(err, &te):
		httpx.TooMany(w, te.RetryAfter, "too many attempts; try again later")
	case errors.Is(err, ErrInvalidCredentials):
		httpx.Error(w, http.StatusUnauthorized, "invalid_credentials", msgInvalid)
	case errors.As(err, &pe) && pe.Rule == RuleTooLong:
		httpx.Error(w, http.StatusRequestEntityTooLarge, "too_large", strings.TrimPrefix(pe.Error(), "auth: "))
	case errors.As(err, &pe):
		httpx.Error(w, http.StatusBadRequest, "password_"+pe.Rule, strings.TrimPrefix(pe.Error(), "auth: "))
	case errors.As(err, &ce):
		httpx.Error(w, http.StatusBadRequest, "bad_scope", ce.Error())
	case errors.Is(err, ErrBadName):
		httpx.Error(w, http.StatusBadRequest, "bad_name", strings.TrimPrefix(err.Error(), "auth: "))
	case errors.Is(err, ErrBadCode):
		httpx.Error(w, http.StatusBadRequest, "bad_code", strings.TrimPrefix(err.Error(), "auth: "))
	case errors.Is(err, ErrNoUser):
		httpx.Error(w, http.StatusNotFound, "no_user", "no such user; `hearth user list` shows the users")
	case errors.Is(err, ErrUserExists):
		httpx.Error(w, http.StatusConflict, "user_exists", "a user of that name exists")
	case errors.Is(err, ErrBusy):
		w.Header().Set("Retry-After", "1")
		httpx.Error(w, http.StatusServiceUnavailable, "busy", "too many password checks in progress; try again shortly")
	default:
		if !errors.Is(err, ErrUnavailable) {
			s.log.Error().Err(err).Msg("auth: request failed")
		}
		httpx.Unavailable(w)
	}
}

func (s *Service) handleLogin(w http.ResponseWriter, r *http.Request) {
	var b loginBody
	if !httpx.DecodeJSON(w, r, httpx.MaxJSONBody, &b) {
		return
	}
	sess, err := s.Login(r.Context(), LoginRequest{Username: b.Username, Password: b.Password, TOTP: b.TOTP, Scope: b.Scope, Client: r.RemoteAddr})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	httpx.JSON(w, http.StatusOK, answer(sess))
}

func (s *Service) handleRefresh(w http.ResponseWriter, r *http.Request) {
	var b struct {
		RefreshToken string `json:"refresh_token"`
	}
	if !httpx.DecodeJSON(w, r, httpx.MaxJSONBody, &b) {
		return
	}
	sess, err := s.Refresh(r.Context(), b.RefreshToken, r.RemoteAddr)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	httpx.JSON(w, http.StatusOK, answer(sess))
}

// bearer returns the Authorization: Bearer token of r, or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func (s *Service) handleLogout(w http.ResponseWriter, r *http.Request) {
	tok := bearer(r)
	if tok == "" {
		httpx.Error(w, http.StatusUnauthorized, "no_token", "logout needs the token to end in Authorization: Bearer")
		return
	}
	if err := s.Logout(r.Context(), tok, r.RemoteAddr); err != nil {
		if errors.Is(err, ErrInvalidCredentials) {
			httpx.Error(w, http.StatusUnauthorized, "invalid_token", "the token is unknown, expired or already revoked")
			return
		}
		s.writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleRecover(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Username     string `json:"username"`
		RecoveryCode string `json:"recovery_code"`
		NewPassword  string `json:"new_password"`
	}
	if !httpx.DecodeJSON(w, r, httpx.MaxJSONBody, &b) {
		return
	}
	if err := s.Recover(r.Context(), RecoverRequest{b.Username, b.RecoveryCode, b.NewPassword, r.RemoteAddr}); err != nil {
		s.writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleReset(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Username    string `json:"username"`
		ResetCode   string `json:"reset_code"`
		NewPassword string `json:"new_password"`
	}
	if !httpx.DecodeJSON(w, r, httpx.MaxJSONBody, &b) {
		return
	}
	if err := s.ResetPassword(r.Context(), b.Username, b.ResetCode, b.NewPassword, r.RemoteAddr); err != nil {
		s.writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handlePassword(w http.ResponseWriter, r *http.Request) {
	user, family, ok := s.tokenFamily(r.Context(), bearer(r))
	if !ok {
		httpx.Error(w, http.StatusUnauthorized, "invalid_token", "changing a password needs a valid token in Authorization: Bearer")
		return
	}
	var b struct {
		OldPassword string `json:"old_password"`
		NewPassword string `json:"new_password"`
		TOTP        string `json:"totp,omitempty"`
	}
	if !httpx.DecodeJSON(w, r, httpx.MaxJSONBody, &b) {
		return
	}
	ctx := authz.WithPrincipal(r.Context(), &authz.Principal{ID: "user:" + user})
	if err := s.SetPassword(ctx, user, b.OldPassword, b.NewPassword, b.TOTP, family, r.RemoteAddr); err != nil {
		s.writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
