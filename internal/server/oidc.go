package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/auth/oidc"
	"github.com/hearth-home/hearth/authz"
)

// oidcAuth adapts *auth.Service to the small interfaces package oidc
// consumes, so that an OIDC login ends in exactly the session a password
// login does, and both share one throttle.
type oidcAuth struct{ s *auth.Service }

var _ oidc.Throttle = (*auth.Service)(nil)

func (a oidcAuth) IssueSession(ctx context.Context, user, method string, mfa bool, client string) (oidc.Session, error) {
	s, err := a.s.IssueSession(ctx, user, method, mfa, client)
	if err != nil {
		return oidc.Session{}, err
	}
	caps := make([]string, len(s.Capabilities))
	for i, c := range s.Capabilities {
		caps[i] = string(c)
	}
	return oidc.Session{Token: s.Token, RefreshToken: s.RefreshToken, ExpiresAt: s.ExpiresAt, Capabilities: caps}, nil
}

func (a oidcAuth) UserForIdentity(ctx context.Context, issuer, subject string) (string, bool, error) {
	u, err := a.s.UserForIdentity(ctx, issuer, subject)
	if errors.Is(err, auth.ErrNoUser) {
		return "", false, nil
	}
	return u, err == nil, err
}

func (a oidcAuth) LinkIdentity(ctx context.Context, user, issuer, subject string) error {
	err := a.s.LinkIdentity(ctx, user, issuer, subject)
	switch {
	case errors.Is(err, auth.ErrNoUser):
		return fmt.Errorf("%w: %w", oidc.ErrUnknownUser, err)
	case errors.Is(err, auth.ErrIdentityLinked):
		return fmt.Errorf("%w: %w", oidc.ErrIdentityLinked, err)
	}
	return err
}

func newOIDC(s *Server, providers []oidc.Provider, publicURL string) (*oidc.Handler, error) {
	ad := oidcAuth{s.auth}
	return oidc.New(providers, oidc.Options{
		Sessions:     ad,
		Identities:   ad,
		Throttle:     s.auth,
		Audit:        s.rec,
		Logger:       s.log,
		Now:          s.opts.Now,
		PublicURL:    publicURL,
		CookieKey:    s.cookieKey,
		SignedInUser: signedInUser(s.opts.Now),
		PrincipalID: func(r *http.Request) string {
			if p := authz.PrincipalFrom(r.Context()); p != nil {
				return p.ID
			}
			return ""
		},
	})
}

// LinkMaxAge bounds how old the authentication of a session that links an
// OIDC identity to its user may be.
const LinkMaxAge = 15 * time.Minute

// signedInUser names the user who may link an OIDC identity to their
// account from the web page: a user session that authenticated with a
// second factor at most LinkMaxAge ago (or the local socket). Linking adds
// a way to sign in as the user, so it is an authenticator change: OWASP
// ASVS 5.0 V7.5.1 asks for a fresh full authentication first, and NIST SP
// 800-63B-4 §4.1 (binding an additional authenticator) for one at the
// assurance level of the result. An OIDC login can assert MFA, so a
// password-only (AAL1) session, say a stolen token, could otherwise bind
// the thief's own provider account and sign in again and again at AAL2,
// up to hearth:admin. Other users link through the admin
// (`hearth user link`, behind hearth:admin).
func signedInUser(now func() time.Time) func(*http.Request) (string, bool) {
	if now == nil {
		now = time.Now
	}
	return func(r *http.Request) (string, bool) {
		p := authz.PrincipalFrom(r.Context())
		if p == nil || p.Kind != authz.KindUser || !strings.HasPrefix(p.ID, "user:") {
			return "", false
		}
		switch p.Method {
		case authz.MethodLocal:
		case authz.MethodToken:
			age := now().Sub(p.AuthTime)
			if !p.MFA || p.AuthTime.IsZero() || age > LinkMaxAge || age < -time.Minute {
				return "", false
			}
		default:
			return "", false
		}
		return strings.TrimPrefix(p.ID, "user:"), true
	}
}
