package auth

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/hearth-home/hearth/internal/store"
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
func (s *Service) Sessions(ctx context.Context, name, current string) []SessionInfo {
	name = canonicalName(name)
	now := s.now().UnixNano()
	var cur string
	if u, f, ok := s.tokenFamily(ctx, current); ok && u == name {
		cur = f
	}
	byFamily := map[string]*SessionInfo{}
	for _, lt := range s.userTokens(ctx, name) {
		if !lt.alive(now, s.set.tokenIdle) {
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
	for _, lt := range s.userTokens(ctx, name) {
		if lt.alive(now, s.set.tokenIdle) && subtle.ConstantTimeCompare([]byte(lt.family), []byte(family)) == 1 {
			found = true
			break
		}
	}
	if !found {
		return ErrInvalidCredentials
	}
	return s.revoke(ctx, revokeFamily(family), "session ended by its user", "user:"+name, client, nil)
}

// userTokens returns name's live access tokens: from the index while the
// feed is fresh, else read from the store (another replica may have issued
// or revoked some); if the store cannot be read, what the index holds
// (listing a session, or offering to end it, decides nothing: the
// revocation itself is a store transaction).
func (s *Service) userTokens(ctx context.Context, name string) []*liveToken {
	var out []*liveToken
	if !s.local && !s.feed.Fresh(time.Now()) {
		now := s.now()
		err := s.view(ctx, func(tx store.Tx) error {
			out = out[:0]
			u, err := getUser(tx, name)
			if err != nil || u == nil {
				return err
			}
			return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
				var r tokenRecord
				if len(k) == 32 && json.Unmarshal(v, &r) == nil && r.User == name {
					if lt := s.indexed(&r, u, now); lt != nil {
						out = append(out, lt)
					}
				}
				return nil
			})
		})
		if err == nil {
			return out
		}
		s.log.Warn().Err(err).Msg("auth: listing sessions from the store; using the index")
		out = nil
	}
	s.mu.RLock()
	for _, lt := range s.tokens {
		if lt.user == name {
			out = append(out, lt)
		}
	}
	s.mu.RUnlock()
	return out
}
