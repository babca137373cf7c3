package auth

import (
	"errors"
	"net/http"
	"time"

	"github.com/hearth-home/hearth/internal/httpx"
)

// AddUserRequest is POST /.hearth/v1/admin/users.
type AddUserRequest struct {
	Name     string   `json:"name"`
	Caps     []string `json:"caps"`
	Password string   `json:"password,omitempty"` // empty: the answer carries a reset code instead
}

// AddUserAnswer answers AddUserRequest. ResetCode is set when no password
// was given: the new user sets their own with it.
type AddUserAnswer struct {
	Name         string    `json:"name"`
	ResetCode    string    `json:"reset_code,omitempty"`
	ResetExpires time.Time `json:"reset_expires,omitzero"`
}

// ResetAnswer answers POST …/users/{name}/reset.
type ResetAnswer struct {
	Code      string    `json:"code"`
	ExpiresAt time.Time `json:"expires_at"`
}

// PasswdRequest is POST …/users/{name}/passwd.
type PasswdRequest struct {
	OldPassword string `json:"old_password"`
	NewPassword string `json:"new_password"`
	TOTP        string `json:"totp,omitempty"`
}

// TOTPAnswer answers POST …/users/{name}/totp: shown once.
type TOTPAnswer struct {
	Secret string `json:"secret"`
	URL    string `json:"url"`
}

// AdminHandler serves user administration under /.hearth/v1/admin/users.
// It does no authorization of its own: the server mounts it behind the
// hearth:admin check (gateway) or on the admin socket (local).
//
//	GET  /.hearth/v1/admin/users                          → []UserInfo
//	POST /.hearth/v1/admin/users                          AddUserRequest → 201 AddUserAnswer
//	POST /.hearth/v1/admin/users/{name}/unlock            → 204
//	POST /.hearth/v1/admin/users/{name}/disable|enable    → 204
//	POST /.hearth/v1/admin/users/{name}/reset             → ResetAnswer
//	POST /.hearth/v1/admin/users/{name}/recovery-codes    → {"codes": [...]}
//	POST /.hearth/v1/admin/users/{name}/passwd            PasswdRequest → 204
//	POST /.hearth/v1/admin/users/{name}/totp              → TOTPAnswer
//	POST /.hearth/v1/admin/users/{name}/totp/confirm      {"code"} → 204
//	POST /.hearth/v1/admin/users/{name}/totp/remove       → 204
func (s *Service) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	const p = "/.hearth/v1/admin/users"
	mux.HandleFunc("GET "+p, func(w http.ResponseWriter, r *http.Request) {
		us, err := s.ListUsers(r.Context())
		if err != nil {
			s.writeErr(w, err)
			return
		}
		if us == nil {
			us = []UserInfo{}
		}
		httpx.JSON(w, http.StatusOK, us)
	})
	mux.HandleFunc("POST "+p, func(w http.ResponseWriter, r *http.Request) {
		var b AddUserRequest
		if !httpx.DecodeJSON(w, r, httpx.MaxJSONBody, &b) {
			return
		}
		if err := s.AddUser(r.Context(), b.Name, b.Caps, b.Password); err != nil {
			s.writeErr(w, err)
			return
		}
		a := AddUserAnswer{Name: b.Name}
		if b.Password == "" {
			var err error
			if a.ResetCode, a.ResetExpires, err = s.ResetCode(r.Context(), b.Name); err != nil {
				s.writeErr(w, err)
				return
			}
		}
		httpx.JSON(w, http.StatusCreated, a)
	})
	simple := func(fn func(*Service, *http.Request, string) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := fn(s, r, r.PathValue("name")); err != nil {
				s.writeErr(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}
	}
	mux.HandleFunc("POST "+p+"/{name}/unlock", simple(func(s *Service, r *http.Request, n string) error { return s.Unlock(r.Context(), n) }))
	mux.HandleFunc("POST "+p+"/{name}/disable", simple(func(s *Service, r *http.Request, n string) error { return s.Disable(r.Context(), n) }))
	mux.HandleFunc("POST "+p+"/{name}/enable", simple(func(s *Service, r *http.Request, n string) error { return s.Enable(r.Context(), n) }))
	mux.HandleFunc("POST "+p+"/{name}/reset", func(w http.ResponseWriter, r *http.Request) {
		code, exp, err := s.ResetCode(r.Context(), r.PathValue("name"))
		if err != nil {
			s.writeErr(w, err)
			return
		}
		httpx.JSON(w, http.StatusOK, ResetAnswer{code, exp})
	})
	mux.HandleFunc("POST "+p+"/{name}/recovery-codes", func(w http.ResponseWriter, r *http.Request) {
		codes, err := s.RegenerateRecoveryCodes(r.Context(), r.PathValue("name"))
		if err != nil {
			s.writeErr(w, err)
			return
		}
		httpx.JSON(w, http.StatusOK, map[string][]string{"codes": codes})
	})
	mux.HandleFunc("POST "+p+"/{name}/passwd", func(w http.ResponseWriter, r *http.Request) {
		var b PasswdRequest
		if !httpx.DecodeJSON(w, r, httpx.MaxJSONBody, &b) {
			return
		}
		if err := s.SetPassword(r.Context(), r.PathValue("name"), b.OldPassword, b.NewPassword, b.TOTP, "", clientOf(r)); err != nil {
			s.writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST "+p+"/{name}/totp", func(w http.ResponseWriter, r *http.Request) {
		secret, url, err := s.EnrollTOTP(r.Context(), r.PathValue("name"))
		if err != nil {
			s.writeErr(w, err)
			return
		}
		httpx.JSON(w, http.StatusOK, TOTPAnswer{secret, url})
	})
	mux.HandleFunc("POST "+p+"/{name}/totp/confirm", func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			Code string `json:"code"`
		}
		if !httpx.DecodeJSON(w, r, httpx.MaxJSONBody, &b) {
			return
		}
		if err := s.ConfirmTOTP(r.Context(), r.PathValue("name"), b.Code); err != nil {
			s.writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	// Passkeys: an admin lists and removes them, and there is deliberately
	// no route to add one — a registration needs the user's own fresh
	// session (passkey.go).
	mux.HandleFunc("GET "+p+"/{name}/passkeys", func(w http.ResponseWriter, r *http.Request) {
		ps, err := s.Passkeys(r.Context(), r.PathValue("name"))
		if err != nil {
			s.writeErr(w, err)
			return
		}
		if ps == nil {
			ps = []PasskeyInfo{}
		}
		httpx.JSON(w, http.StatusOK, ps)
	})
	mux.HandleFunc("POST "+p+"/{name}/passkeys/remove", func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			ID string `json:"id,omitempty"` // empty: every passkey of the user
		}
		if !httpx.DecodeJSON(w, r, httpx.MaxJSONBody, &b) {
			return
		}
		if err := s.RemovePasskey(r.Context(), r.PathValue("name"), b.ID, r.RemoteAddr); err != nil {
			if errors.Is(err, ErrNoPasskey) {
				httpx.Error(w, http.StatusNotFound, "no_passkey", "the user has no such passkey; `hearth user passkeys NAME` lists them")
				return
			}
			s.writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST "+p+"/{name}/totp/remove", simple(func(s *Service, r *http.Request, n string) error { return s.RemoveTOTP(r.Context(), n) }))
	mux.HandleFunc(p+"/", func(w http.ResponseWriter, r *http.Request) {
		httpx.Error(w, http.StatusNotFound, "not_found", "no such user admin endpoint (or wrong method)")
	})
	return mux
}

// clientOf is the client address for throttling; the admin socket has no
// IP address, so its requests share the bucket "local".
func clientOf(r *http.Request) string {
	if r.RemoteAddr == "" || r.RemoteAddr == "@" {
		return "local"
	}
	return r.RemoteAddr
}
