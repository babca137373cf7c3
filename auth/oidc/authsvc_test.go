package oidc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/auth"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// authAdapter is the few lines the server needs between *auth.Service and
// this package's interfaces (auth's Allow/Failure/Success already match
// Throttle).
type authAdapter struct{ s *auth.Service }

func (a authAdapter) IssueSession(ctx context.Context, user, method string, mfa bool, client string) (Session, error) {
	s, err := a.s.IssueSession(ctx, user, method, mfa, client)
	if err != nil {
		return Session{}, err
	}
	caps := make([]string, len(s.Capabilities))
	for i, c := range s.Capabilities {
		caps[i] = string(c)
	}
	return Session{Token: s.Token, RefreshToken: s.RefreshToken, ExpiresAt: s.ExpiresAt, Capabilities: caps}, nil
}

func (a authAdapter) UserForIdentity(ctx context.Context, issuer, subject string) (string, bool, error) {
	u, err := a.s.UserForIdentity(ctx, issuer, subject)
	if errors.Is(err, auth.ErrNoUser) {
		return "", false, nil
	}
	return u, err == nil, err
}

func (a authAdapter) LinkIdentity(ctx context.Context, user, issuer, subject string) error {
	err := a.s.LinkIdentity(ctx, user, issuer, subject)
	switch {
	case errors.Is(err, auth.ErrNoUser):
		return fmt.Errorf("%w: %w", ErrUnknownUser, err)
	case errors.Is(err, auth.ErrIdentityLinked):
		return fmt.Errorf("%w: %w", ErrIdentityLinked, err)
	}
	return err
}

var _ Throttle = (*auth.Service)(nil)

// With the real auth.Service: an OIDC login yields an ordinary hearth
// token, which authenticates as a token principal and meets the same
// trust-level rules as a password login — a remote plugins:install needs
// a second factor, which an amr of [pwd otp] provides and [pwd] does not.
func TestWithAuthService(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "hearth.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	policy, err := authz.New(authz.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &memAudit{}
	svc, err := auth.Open(boltstore.New(db), auth.Config{Argon2: auth.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}, ClientBurst: 1000}, auth.Options{Policy: policy, Audit: rec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	if err := svc.AddUser(context.Background(), "alice", []string{"system:write", "system:read"}, ""); err != nil {
		t.Fatal(err)
	}
	ad := authAdapter{svc}
	hs := newHarnessOpts(t, func(o *Options) {
		o.Sessions, o.Identities, o.Emails, o.Throttle, o.Audit = ad, ad, nil, svc, rec
	})
	hs.audit = rec
	if err := ad.LinkIdentity(context.Background(), "mallory", hs.op.issuer, "x"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("LinkIdentity(unknown user) = %v, want ErrUnknownUser", err)
	}
	if err := ad.LinkIdentity(context.Background(), "alice", hs.op.issuer, "sub-alice"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		amr   []string
		mfa   bool
		allow bool
	}{
		{"password only", []string{"pwd"}, false, false},
		{"password and otp", []string{"pwd", "otp"}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs.op.storage.mu.Lock()
			hs.op.storage.amr = tc.amr
			hs.op.storage.mu.Unlock()
			b := hs.browser(t)
			resp, body := b.get(b.login("alice", "alice-pw", "/"), "")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("callback: got %d %s", resp.StatusCode, body)
			}
			var tok string
			for _, c := range resp.Cookies() {
				if c.Name == SessionCookie {
					tok = c.Value
				}
			}
			p, err := svc.AuthenticateToken(context.Background(), tok)
			if err != nil {
				t.Fatalf("AuthenticateToken(session cookie): %v", err)
			}
			if p.ID != "user:alice" || p.Method != authz.MethodToken || p.MFA != tc.mfa {
				t.Fatalf("principal = %+v, want user:alice via token, MFA %v", p, tc.mfa)
			}
			p.Zone = authz.ZoneRemote
			if d := policy.Decide(p, authz.CapPluginsInstall, time.Now()); d.Allow != tc.allow {
				t.Fatalf("Decide(remote plugins:install) = %v (%s), want %v", d.Allow, d.Reason(), tc.allow)
			}
		})
	}

	// A user locked out by failed logins cannot sign in through OIDC either.
	t.Run("locked out", func(t *testing.T) {
		for i := 0; i < 50; i++ {
			if _, ok := svc.AllowAttempt("203.0.113.9", "alice"); !ok {
				break
			}
			svc.RecordFailure("alice")
		}
		if _, ok := svc.AllowAttempt("203.0.113.9", "alice"); ok {
			t.Fatal("alice is not locked out after 50 failures")
		}
		b := hs.browser(t)
		issues := func() (n int) {
			for _, e := range rec.all() {
				if e.Name == audit.EventTokenIssue {
					n++
				}
			}
			return n
		}
		n := issues()
		if n != 2 {
			t.Fatalf("token.issue entries = %d, want 2 (one per login above)", n)
		}
		resp, body := b.get(b.login("alice", "alice-pw", "/"), "application/json")
		if resp.StatusCode != http.StatusTooManyRequests || errorCode(t, body) != "throttled" {
			t.Fatalf("OIDC login of a locked-out user: got %d %s, want 429", resp.StatusCode, body)
		}
		if issues() != n {
			t.Fatal("a session was issued")
		}
	})
}
