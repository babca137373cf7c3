package auth

import (
	"context"
	"crypto/subtle"
	"slices"
	"strings"
	"time"
)

// SessionInfo is one of a user's sign-in sessions (a token family: an
// access token and the refresh tokens that followed it), as the Account
// page lists them. It holds no token.
type SessionInfo struct {
	// Family names the session; it is not a secret (audit entries carry
	// it) and cannot be used to authenticate.
	Family   string
	Current  bool // the session of the token given to Sessions
	AuthTime time.Time
	LastUsed time.Time
	Expires  time.Time
	MFA      bool
}

// Sessions lists name's live sessions, newest sign-in first; current, if
// it is one of name's live access tokens, marks its session Current.
func (s *Service) Sessions(_ context.Context, name, current string) []SessionInfo {
	name = canonicalName(name)
	now := s.now().UnixNano()
	var cur string
	if u, f, ok := s.tokenFamily(current); ok && u == name {
		cur = f
	}
	byFamily := map[string]*SessionInfo{}
	s.mu.RLock()
	for _, lt := range s.tokens {
		if lt.user != name || !lt.alive(now, s.set.tokenIdle) {
			continue
		}
		si := byFamily[lt.family]
		if si == nil {
			si = &SessionInfo{Family: lt.family, AuthTime: lt.authTime, MFA: lt.mfa, Current: lt.family == cur}
			byFamily[lt.family] = si
		}
		if lu := time.Unix(0, lt.lastUsed.Load()); lu.After(si.LastUsed) {
			si.LastUsed = lu
		}
		if ex := time.Unix(0, lt.expires); ex.After(si.Expires) {
			si.Expires = ex
		}
	}
	s.mu.RUnlock()
	out := make([]SessionInfo, 0, len(byFamily))
	for _, si := range byFamily {
		out = append(out, *si)
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return b.AuthTime.Compare(a.AuthTime) })
	return out
}

// EndSession ends one of name's sessions (its access and refresh tokens),
// recorded as token.revoke. A family that is not one of name's live
// sessions is ErrInvalidCredentials: a user ends only her own.
func (s *Service) EndSession(ctx context.Context, name, family, client string) error {
	name = canonicalName(name)
	if family == "" || len(family) > 64 || strings.ContainsAny(family, " \t") {
		return ErrInvalidCredentials
	}
	found := false
	now := s.now().UnixNano()
	s.mu.RLock()
	for _, lt := range s.tokens {
		if lt.user == name && lt.alive(now, s.set.tokenIdle) && subtle.ConstantTimeCompare([]byte(lt.family), []byte(family)) == 1 {
			found = true
			break
		}
	}
	s.mu.RUnlock()
	if !found {
		return ErrInvalidCredentials
	}
	return s.revoke(ctx, revokeFamily(family), "session ended by its user", "user:"+name, client, nil)
}
