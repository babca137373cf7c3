package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store"
)

// Token prefixes make a leaked token recognisable to secret scanners and
// people alike. The rest is 32 bytes (256 bits) from crypto/rand, base64url.
const (
	AccessTokenPrefix  = "hth_at_"
	RefreshTokenPrefix = "hth_rt_"
	tokenBytes         = 32
	tokenTextLen       = 43 // base64url of 32 bytes, unpadded
)

// Session is what a successful login, refresh or OIDC callback yields.
type Session struct {
	User             string             `json:"user"`
	Token            string             `json:"token"`
	RefreshToken     string             `json:"refresh_token"`
	ExpiresAt        time.Time          `json:"expires_at"`
	RefreshExpiresAt time.Time          `json:"refresh_expires_at"`
	Capabilities     []authz.Capability `json:"capabilities"`
	MFA              bool               `json:"mfa"`
}

// liveToken is an access token in the in-memory index. Everything but
// lastUsed is immutable after creation.
type liveToken struct {
	user     string
	id       string // "user:<name>"
	family   string
	caps     []authz.Capability
	authTime time.Time
	expires  int64 // unix nanoseconds
	mfa      bool
	pr       bool // phishing resistant (a passkey)
	lastUsed atomic.Int64
	flushed  int64 // lastUsed as last written; guarded by Service.mu
}

func newLiveToken(r *tokenRecord) *liveToken {
	lt := &liveToken{user: r.User, id: "user:" + r.User, family: r.Family, caps: r.Caps, authTime: r.AuthTime, expires: r.Expires.UnixNano(), mfa: r.MFA, pr: r.PR}
	lt.lastUsed.Store(r.LastUsed.UnixNano())
	lt.flushed = r.LastUsed.UnixNano()
	return lt
}

// keepNewer carries over old's later use into lt (a reload from the store
// must not move the idle clock back).
func (lt *liveToken) keepNewer(old *liveToken) {
	if u := old.lastUsed.Load(); u > lt.lastUsed.Load() {
		lt.lastUsed.Store(u)
	}
}

func (lt *liveToken) alive(now int64, idle time.Duration) bool {
	return now < lt.expires && now-lt.lastUsed.Load() < int64(idle)
}

// tokenHash is the storage key of a token: SHA-256 of its text. Tokens
// carry 256 bits from crypto/rand, so a fast hash is enough (NIST SP
// 800-63B-4 §3.1.2.1 asks a slow hash only below 112 bits).
func tokenHash(tok string) [32]byte {
	var buf [64]byte // tokens are 50 bytes: hash from the stack, no allocation
	if len(tok) <= len(buf) {
		n := copy(buf[:], tok)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(tok))
}

// tokenID names a token in audit entries without revealing it: the first
// 12 hex digits of its SHA-256.
func tokenID(h [32]byte) string { return hex.EncodeToString(h[:6]) }

func (s *Service) randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.rand, b); err != nil {
		return nil, fmt.Errorf("auth: reading randomness: %w", err)
	}
	return b, nil
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// randomString returns n random bytes as unpadded lowercase base32.
func (s *Service) randomString(n int) (string, error) {
	b, err := s.randomBytes(n)
	if err != nil {
		return "", err
	}
	return strings.ToLower(b32.EncodeToString(b)), nil
}

func (s *Service) newToken(prefix string) (string, [32]byte, error) {
	b, err := s.randomBytes(tokenBytes)
	if err != nil {
		return "", [32]byte{}, err
	}
	tok := prefix + base64.RawURLEncoding.EncodeToString(b)
	return tok, tokenHash(tok), nil
}

// wellFormed checks a presented token's shape before any lookup.
func wellFormed(tok, prefix string) bool {
	if len(tok) != len(prefix)+tokenTextLen || !strings.HasPrefix(tok, prefix) {
		return false
	}
	for i := len(prefix); i < len(tok); i++ {
		c := tok[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// AuthenticateToken implements mtls.TokenAuthenticator from the in-memory
// index while the store's feed is fresh (store.Feed.Fresh: every change
// committed more than a second ago, by any replica, has reached the
// index). The returned Principal is new on each call (the gateway sets its
// Zone), but its Caps slice is shared and must not be modified. It costs a
// hash, a map lookup under a read lock and two clock comparisons. The idle
// timestamp is updated in memory and written back in batches. It returns
// authz.ErrInvalidToken for an unknown, expired, idle or revoked token.
//
// When the feed is not fresh (its connection is down), the index may hold
// a token another replica revoked, so it is not trusted: the token and
// its user are read from the store, and a store that cannot be read is
// ErrUnavailable (the gateway answers 503) — never an answer from a stale
// cache.
func (s *Service) AuthenticateToken(ctx context.Context, token string) (*authz.Principal, error) {
	if !wellFormed(token, AccessTokenPrefix) {
		return nil, authz.ErrInvalidToken
	}
	h := tokenHash(token)
	lt, err := s.lookup(ctx, h)
	if err != nil {
		return nil, err
	}
	if lt == nil {
		return nil, authz.ErrInvalidToken
	}
	now := s.now().UnixNano()
	if !lt.alive(now, s.set.tokenIdle) {
		return nil, authz.ErrInvalidToken
	}
	// Sliding idle timeout (ASVS 5.0 V7.3.1). Storing only when the value
	// moved by a second keeps the cache line quiet under load.
	if now-lt.lastUsed.Load() > int64(time.Second) {
		lt.lastUsed.Store(now)
	}
	return &authz.Principal{ID: lt.id, Kind: authz.KindUser, Caps: lt.caps, Method: authz.MethodToken, AuthTime: lt.authTime, MFA: lt.mfa, PhishingResistant: lt.pr}, nil
}

// lookup returns the index entry of the access token of hash h (nil: not
// live): from the index while the feed is fresh, else from the store (see
// AuthenticateToken), bringing the index in step with what it read.
func (s *Service) lookup(ctx context.Context, h [32]byte) (*liveToken, error) {
	s.mu.RLock()
	lt := s.tokens[h]
	s.mu.RUnlock()
	if s.local {
		return lt, nil
	}
	if s.feed.Fresh(time.Now()) { // the feed's bound is wall-clock time
		// A token another replica issued a moment ago may not have
		// reached this one's index yet (its change is on the way): a
		// miss is looked up in the store, at most missReadRate a second,
		// so that a flood of invented tokens cannot become a flood of
		// store reads.
		if lt != nil || !s.missReads.Allow() {
			return lt, nil
		}
	}
	var got *liveToken
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		got, err = s.readToken(tx, h, s.now(), nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	switch cur := s.tokens[h]; {
	case got == nil:
		delete(s.tokens, h)
	case cur != nil:
		got.keepNewer(cur)
		got.flushed = cur.flushed
		s.tokens[h] = got
	default:
		s.tokens[h] = got
	}
	s.mu.Unlock()
	return got, nil
}

// missReadRate bounds the store reads of tokens missing from a fresh
// index (per replica, with a burst of as many).
const missReadRate = 100

// grant is what a new token pair carries.
type grant struct {
	user     string
	family   string // empty: start a new family
	caps     []authz.Capability
	authTime time.Time
	mfa      bool
	method   string // password, oidc, recovery, reset, passkey, password+passkey
	client   string
	pr       bool // a passkey took part (phishing resistant)
}

// issueTx creates an access and refresh token pair in tx and returns the
// session, the index entry to publish after commit and the audit event.
func (s *Service) issueTx(ctx context.Context, tx store.Tx, g grant) (*Session, [32]byte, *liveToken, audit.Event, error) {
	var zero [32]byte
	now := s.now().UTC()
	if g.family == "" {
		f, err := s.randomBytes(12)
		if err != nil {
			return nil, zero, nil, audit.Event{}, err
		}
		g.family = hex.EncodeToString(f)
	}
	at, ah, err := s.newToken(AccessTokenPrefix)
	if err != nil {
		return nil, zero, nil, audit.Event{}, err
	}
	rt, rh, err := s.newToken(RefreshTokenPrefix)
	if err != nil {
		return nil, zero, nil, audit.Event{}, err
	}
	tr := tokenRecord{User: g.user, Family: g.family, Caps: g.caps, AuthTime: g.authTime, Expires: now.Add(s.set.tokenLifetime), LastUsed: now, MFA: g.mfa, Method: g.method, PR: g.pr}
	rr := refreshRecord{User: g.user, Family: g.family, Caps: g.caps, AuthTime: g.authTime, Expires: now.Add(s.set.refreshLifetime), MFA: g.mfa, Method: g.method, PR: g.pr}
	if err := putJSON(tx, bucketTokens, ah[:], tr); err != nil {
		return nil, zero, nil, audit.Event{}, err
	}
	if err := putJSON(tx, bucketRefresh, rh[:], rr); err != nil {
		return nil, zero, nil, audit.Event{}, err
	}
	fams, err := s.userSessionsTx(tx, g.user)
	if err != nil {
		return nil, zero, nil, audit.Event{}, err
	}
	fams[g.family] = rr.Expires
	if err := putJSON(tx, bucketUserSessions, []byte(g.user), fams); err != nil {
		return nil, zero, nil, audit.Event{}, err
	}
	sess := &Session{User: g.user, Token: at, RefreshToken: rt, ExpiresAt: tr.Expires, RefreshExpiresAt: rr.Expires, Capabilities: g.caps, MFA: g.mfa}
	ev := s.event(ctx, audit.EventTokenIssue, audit.OutcomeSuccess, "user:"+g.user, "", g.client, map[string]string{
		"token_id": tokenID(ah), "refresh_id": tokenID(rh), "family": g.family, "method": g.method,
		"mfa": fmt.Sprint(g.mfa), "caps": capsString(g.caps), "expires": tr.Expires.Format(time.RFC3339),
	})
	if g.pr {
		ev.Meta["phishing_resistant"] = "true"
	}
	return sess, ah, newLiveToken(&tr), ev, nil
}

// MaxSessionsPerUser bounds a user's concurrent sessions (token families);
// a login beyond it ends the user's oldest session, so that neither the
// store nor the in-memory index grows without bound.
const MaxSessionsPerUser = 100

// capSessionsTx ends user's oldest sessions so that one more fits.
func (s *Service) capSessionsTx(ctx context.Context, tx store.Tx, user, client string) ([][32]byte, []audit.Event, error) {
	type fam struct {
		id      string
		expires time.Time
	}
	latest, err := s.userSessionsTx(tx, user)
	if err != nil {
		return nil, nil, err
	}
	if len(latest) < MaxSessionsPerUser {
		return nil, nil, nil
	}
	fams := make([]fam, 0, len(latest))
	for id, e := range latest {
		fams = append(fams, fam{id, e})
	}
	slices.SortFunc(fams, func(a, b fam) int { return a.expires.Compare(b.expires) })
	var hashes [][32]byte
	var evs []audit.Event
	for _, f := range fams[:len(fams)-MaxSessionsPerUser+1] {
		hs, n, err := revokeTx(tx, revokeFamily(f.id))
		if err != nil {
			return nil, nil, err
		}
		hashes = append(hashes, hs...)
		evs = append(evs, s.event(ctx, audit.EventTokenRevoke, audit.OutcomeSuccess, "user:"+user, "session limit: oldest session ended", client, map[string]string{"family": f.id, "count": fmt.Sprint(n)}))
	}
	return hashes, evs, nil
}

// userSessionsTx returns user's live sessions (token families) with the
// expiry of each one's newest refresh token, from the user's record in
// auth.user_sessions, so that a login reads one record, not every refresh
// token (which on PostgreSQL would also make every two concurrent logins
// a serialization conflict). A user without the record (sessions issued
// by a hearth before it existed) has it built from the refresh tokens.
func (s *Service) userSessionsTx(tx store.Tx, user string) (map[string]time.Time, error) {
	now := s.now()
	fams := map[string]time.Time{}
	if v := tx.Bucket(bucketUserSessions).Get([]byte(user)); v != nil {
		if err := json.Unmarshal(v, &fams); err != nil {
			return nil, fmt.Errorf("auth: sessions of %q: corrupt record: %w", user, err)
		}
	} else {
		err := tx.Bucket(bucketRefresh).ForEach(func(k, v []byte) error {
			var r refreshRecord
			if json.Unmarshal(v, &r) == nil && r.User == user && !r.Used && r.Expires.After(fams[r.Family]) {
				fams[r.Family] = r.Expires
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for f, e := range fams {
		if !now.Before(e) {
			delete(fams, f)
		}
	}
	return fams, nil
}

// dropping is the memEffect that removes revoked tokens from the index.
func (s *Service) dropping(hashes *[][32]byte) memEffect {
	return memEffect{apply: func() { s.drop(*hashes) }}
}

// publishing is the memEffect that adds an issued token to the index (and
// removes the ones a session limit ended).
func (s *Service) publishing(h *[32]byte, lt **liveToken, evicted *[][32]byte) memEffect {
	return memEffect{
		apply: func() {
			s.drop(*evicted)
			s.publish(*h, *lt)
		},
		undo: func() { s.drop([][32]byte{*h}) },
	}
}

// drop removes revoked tokens from the in-memory index.
func (s *Service) drop(hashes [][32]byte) {
	if len(hashes) == 0 {
		return
	}
	s.mu.Lock()
	for _, h := range hashes {
		delete(s.tokens, h)
	}
	s.mu.Unlock()
}

func (s *Service) publish(h [32]byte, lt *liveToken) {
	s.mu.Lock()
	s.tokens[h] = lt
	s.mu.Unlock()
}

func capsString(cs []authz.Capability) string {
	ss := make([]string, len(cs))
	for i, c := range cs {
		ss[i] = string(c)
	}
	return strings.Join(ss, ",")
}

// userCaps expands a user's granted names with the current policy.
func (s *Service) userCaps(u *userRecord) ([]authz.Capability, error) {
	return s.policy.Load().Expand(u.Caps)
}

// narrow intersects the user's capabilities with a requested scope (names
// or bundles); an empty scope keeps them all. A token never carries more
// than its user has (ASVS 5.0 V8.2).
func (s *Service) narrow(have []authz.Capability, scope []string) ([]authz.Capability, error) {
	if len(scope) == 0 {
		return have, nil
	}
	want, err := s.policy.Load().Expand(scope)
	if err != nil {
		return nil, err
	}
	var out []authz.Capability
	for _, c := range want {
		if slices.Contains(have, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// intersect returns the capabilities of a that b also has, in a's order.
func intersect(a, b []authz.Capability) []authz.Capability {
	out := []authz.Capability{}
	for _, c := range a {
		if slices.Contains(b, c) {
			out = append(out, c)
		}
	}
	return out
}

// IssueSession issues a token pair for username after an authentication
// that happened elsewhere (method "password" or "oidc"), so that OIDC
// sessions are exactly like password ones. mfa says whether a second
// factor was used; client is the client address for the audit entry.
func (s *Service) IssueSession(ctx context.Context, username, method string, mfa bool, client string) (*Session, error) {
	if authz.PrincipalFrom(ctx) == nil {
		ctx = authz.WithPrincipal(ctx, &authz.Principal{ID: "user:" + username})
	}
	var evicted [][32]byte
	var sess *Session
	var h [32]byte
	var lt *liveToken
	err := s.commit(ctx, func(tx store.Tx) ([]audit.Event, error) {
		u, err := getUser(tx, username)
		if err != nil {
			return nil, err
		}
		if u == nil || u.Disabled {
			return nil, ErrInvalidCredentials
		}
		caps, err := s.userCaps(u)
		if err != nil {
			return nil, err
		}
		var evs []audit.Event
		if evicted, evs, err = s.capSessionsTx(ctx, tx, username, client); err != nil {
			return nil, err
		}
		var ev audit.Event
		sess, h, lt, ev, err = s.issueTx(ctx, tx, grant{user: username, caps: caps, authTime: s.now().UTC(), mfa: mfa, method: method, client: client})
		return append(evs, ev), err
	}, s.publishing(&h, &lt, &evicted))
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// Refresh exchanges a refresh token for a new pair in the same family. A
// refresh token is single use: presenting one that was already used
// revokes its whole family (OAuth 2.0 Security BCP, RFC 9700 §4.14.2) and
// fails. The new access token keeps the family's original AuthTime, so a
// refresh never makes a session look freshly authenticated.
func (s *Service) Refresh(ctx context.Context, refresh, client string) (*Session, error) {
	if !wellFormed(refresh, RefreshTokenPrefix) {
		return nil, ErrInvalidCredentials
	}
	rh := tokenHash(refresh)
	var sess *Session
	var h [32]byte
	var lt *liveToken
	var reused *refreshRecord
	err := s.commit(ctx, func(tx store.Tx) ([]audit.Event, error) {
		reused = nil // fn may run more than once
		v := tx.Bucket(bucketRefresh).Get(rh[:])
		if v == nil {
			return nil, ErrInvalidCredentials
		}
		var r refreshRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, ErrInvalidCredentials
		}
		if !s.now().Before(r.Expires) {
			return nil, ErrInvalidCredentials
		}
		if r.Used {
			reused = &r
			return nil, ErrInvalidCredentials
		}
		u, err := getUser(tx, r.User)
		if err != nil {
			return nil, err
		}
		if u == nil || u.Disabled {
			return nil, ErrInvalidCredentials
		}
		r.Used = true
		if err := putJSON(tx, bucketRefresh, rh[:], r); err != nil {
			return nil, err
		}
		// Never more than the user has now: grants and bundles may have
		// changed since the login.
		current, err := s.userCaps(u)
		if err != nil {
			return nil, err
		}
		caps := intersect(r.Caps, current)
		var ev audit.Event
		sess, h, lt, ev, err = s.issueTx(ctx, tx, grant{user: r.User, family: r.Family, caps: caps, authTime: r.AuthTime, mfa: r.MFA, method: r.Method, client: client, pr: r.PR})
		ev.Meta["refreshed_from"] = tokenID(rh)
		ev.Principal = "user:" + r.User
		return []audit.Event{ev}, err
	}, s.publishing(&h, &lt, new([][32]byte)))
	if reused != nil {
		// Reuse means the token was copied: end the family (both copies).
		ctx = authz.WithPrincipal(ctx, &authz.Principal{ID: "user:" + reused.User})
		_ = s.revoke(ctx, revokeFamily(reused.Family), "refresh token reused", "user:"+reused.User, client, map[string]string{"refresh_id": tokenID(rh)})
		return nil, ErrInvalidCredentials
	}
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// revokeSel picks the tokens a revocation ends.
type revokeSel struct {
	user         string
	family       string
	exceptFamily string
}

func revokeFamily(f string) revokeSel { return revokeSel{family: f} }
func revokeUser(u string) revokeSel   { return revokeSel{user: u} }

func (sel revokeSel) match(user, family string) bool {
	if sel.exceptFamily != "" && family == sel.exceptFamily {
		return false
	}
	if sel.family != "" {
		return family == sel.family
	}
	return user == sel.user
}

// revokeTx deletes the selected tokens from the store; it returns their
// hashes for the index.
func revokeTx(tx store.Tx, sel revokeSel) ([][32]byte, int, error) {
	var access [][32]byte
	var refresh [][]byte
	ended := map[string][]string{} // user → families ended
	err := tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
		var r tokenRecord
		if json.Unmarshal(v, &r) == nil && sel.match(r.User, r.Family) && len(k) == 32 {
			access = append(access, [32]byte(k))
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	err = tx.Bucket(bucketRefresh).ForEach(func(k, v []byte) error {
		var r refreshRecord
		if json.Unmarshal(v, &r) == nil && sel.match(r.User, r.Family) {
			refresh = append(refresh, slices.Clone(k))
			if !slices.Contains(ended[r.User], r.Family) {
				ended[r.User] = append(ended[r.User], r.Family)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	for _, k := range access {
		if err := tx.Bucket(bucketTokens).Delete(k[:]); err != nil {
			return nil, 0, err
		}
	}
	for _, k := range refresh {
		if err := tx.Bucket(bucketRefresh).Delete(k); err != nil {
			return nil, 0, err
		}
	}
	sb := tx.Bucket(bucketUserSessions)
	for user, fs := range ended {
		v := sb.Get([]byte(user))
		if v == nil {
			continue // built from the refresh tokens when next needed
		}
		fams := map[string]time.Time{}
		if err := json.Unmarshal(v, &fams); err != nil {
			return nil, 0, fmt.Errorf("auth: sessions of %q: corrupt record: %w", user, err)
		}
		for _, f := range fs {
			delete(fams, f)
		}
		if err := putJSON(tx, bucketUserSessions, []byte(user), fams); err != nil {
			return nil, 0, err
		}
	}
	return access, len(access) + len(refresh), nil
}

// revoke ends the selected tokens, recording the events first (before a
// token.revoke event of its own).
func (s *Service) revoke(ctx context.Context, sel revokeSel, reason, resource, client string, meta map[string]string, first ...audit.Event) error {
	var hashes [][32]byte
	return s.commit(ctx, func(tx store.Tx) ([]audit.Event, error) {
		var n int
		var err error
		hashes, n, err = revokeTx(tx, sel)
		if err != nil {
			return nil, err
		}
		if meta == nil {
			meta = map[string]string{}
		}
		meta["count"] = fmt.Sprint(n)
		if sel.family != "" {
			meta["family"] = sel.family
		}
		return append(first, s.event(ctx, audit.EventTokenRevoke, audit.OutcomeSuccess, resource, reason, client, meta)), nil
	}, s.dropping(&hashes))
}

// Logout revokes the presented access token and its whole family (the
// refresh token too) at once.
func (s *Service) Logout(ctx context.Context, token, client string) error {
	if !wellFormed(token, AccessTokenPrefix) {
		return ErrInvalidCredentials
	}
	h := tokenHash(token)
	lt, err := s.lookup(ctx, h)
	if err != nil {
		return err
	}
	if lt == nil || !lt.alive(s.now().UnixNano(), s.set.tokenIdle) {
		return ErrInvalidCredentials
	}
	ctx = authz.WithPrincipal(ctx, &authz.Principal{ID: lt.id})
	logout := s.event(ctx, audit.EventAuthLogout, audit.OutcomeSuccess, lt.id, "", client, map[string]string{"token_id": tokenID(h), "family": lt.family})
	return s.revoke(ctx, revokeFamily(lt.family), "logout", lt.id, client, map[string]string{"token_id": tokenID(h)}, logout)
}

// tokenFamily returns the family and user of a live access token.
func (s *Service) tokenFamily(ctx context.Context, token string) (user, family string, ok bool) {
	if !wellFormed(token, AccessTokenPrefix) {
		return "", "", false
	}
	lt, err := s.lookup(ctx, tokenHash(token))
	if err != nil || lt == nil || !lt.alive(s.now().UnixNano(), s.set.tokenIdle) {
		return "", "", false
	}
	return lt.user, lt.family, true
}
