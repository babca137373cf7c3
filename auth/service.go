package auth

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store"
)

// Sentinel errors callers branch on.
var (
	// ErrUnavailable means the audit log or the store could not be
	// written; nothing was changed (HTTP 503).
	ErrUnavailable = errors.New("auth: audit log or store unavailable")
	// ErrUserExists is returned when adding a user whose name is taken.
	ErrUserExists = errors.New("auth: user already exists")
	// ErrNoUser is returned by admin operations on a name with no user.
	ErrNoUser = errors.New("auth: no such user")
	// ErrBadName is returned for a user name that is not 1–64 of a–z, 0–9, '.', '_', '-'.
	ErrBadName = errors.New("auth: user names are 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
	// ErrInvalidCredentials is the one answer to a wrong or unknown
	// username, password, one-time code, recovery or reset code.
	ErrInvalidCredentials = errors.New("auth: invalid credentials")
	// ErrBadCode is returned when a TOTP confirmation code is wrong.
	ErrBadCode = errors.New("auth: the one-time code is wrong or was already used")
)

// ThrottledError says how long to wait before trying again (HTTP 429).
type ThrottledError struct{ RetryAfter time.Duration }

// Error implements error.
func (e *ThrottledError) Error() string {
	return fmt.Sprintf("auth: too many attempts; try again in %s", e.RetryAfter.Round(time.Second))
}

// Options are the collaborators of a Service. The zero value works: no
// policy means the default authz policy, no recorder records nothing, and
// the clock, randomness and logger default to the real ones.
type Options struct {
	// Policy expands granted capability names; nil means authz.New(authz.Config{}).
	Policy *authz.Policy
	// Audit records every login, lockout, recovery, token and user change
	// before it takes effect; nil means audit.Discard.
	Audit audit.Recorder
	// Logger receives operational messages (never a secret).
	Logger zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the source of salts, tokens and codes; nil means crypto/rand.
	Rand io.Reader
	// ZoneOf maps a client address to its zone, for audit entries; nil
	// leaves the zone out.
	ZoneOf func(remoteAddr string) authz.Zone
}

// Service holds users, sessions and codes in the store (store.Store: the
// data dir's hearth.db, or PostgreSQL shared by replicas) and answers
// password logins and bearer tokens. It is safe for concurrent use.
type Service struct {
	st     store.Store
	feed   store.Feed
	local  bool // the store has one process (bbolt): the index is always fresh
	set    settings
	policy atomic.Pointer[authz.Policy] // swapped by SetPolicy on a reload
	audit  audit.Recorder
	log    zerolog.Logger
	now    func() time.Time
	rand   io.Reader
	zoneOf func(string) authz.Zone

	hasher *hasher
	dummy  string // PHC of a random password, verified for unknown users
	thr    *throttle

	mu        sync.RWMutex
	tokens    map[[32]byte]*liveToken
	missReads *rate.Limiter // store reads of tokens missing from a fresh index (lookup)

	pk passkeys // passkey.go

	stop     chan struct{}
	done     chan struct{}
	feedStop context.CancelFunc
	feedDone chan struct{}
	closeErr error
	once     sync.Once

	lastPrune atomic.Int64 // unix nanoseconds of the last pruning of lockout records
	maxNames  int          // bound on lockout records of non-users: maxTrackedNames (tests lower it)

	// failCommit, set only by tests, is called as the last BeforeCommit
	// hook of every commit; an error it returns rolls the transaction
	// back, as a failed commit (I/O error, disk full, a lost connection)
	// would after the audit entries were recorded.
	failCommit atomic.Pointer[func() error]
}

// flushInterval is how often idle-timeout timestamps are written back to
// the store and expired records deleted (batched, so that verifying a
// token never waits on a write).
const flushInterval = 30 * time.Second

// Open declares the auth buckets if needed, loads live tokens into the
// in-memory index, subscribes to the store's feed of changes (so that a
// token revoked, a user disabled or a password changed on another replica
// leaves this one's index too) and starts the background writer of batched
// updates (stopped by Close, which leaves st open: the caller owns it).
func Open(st store.Store, cfg Config, opts Options) (*Service, error) {
	set, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	s := &Service{
		st: st, feed: st.Feed(), set: set, audit: opts.Audit, log: opts.Logger,
		now: opts.Now, rand: opts.Rand, zoneOf: opts.ZoneOf,
		thr:    newThrottle(set.clientBurst, set.clientRefill),
		tokens: map[[32]byte]*liveToken{}, maxNames: maxTrackedNames,
		missReads: rate.NewLimiter(missReadRate, missReadRate),
		stop:      make(chan struct{}), done: make(chan struct{}), feedDone: make(chan struct{}),
	}
	_, s.local = s.feed.(store.StillFresh)
	s.policy.Store(opts.Policy)
	if opts.Policy == nil {
		p, err := authz.New(authz.Config{})
		if err != nil {
			return nil, err
		}
		s.policy.Store(p)
	}
	if s.audit == nil {
		s.audit = audit.Discard{}
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	s.hasher = newHasher(set.argon2, set.maxHashes, set.hashQueue, s.rand)
	if s.dummy, err = s.hasher.dummy(); err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := st.Declare(ctx, allBuckets...); err != nil {
		return nil, fmt.Errorf("auth: declaring buckets: %w", err)
	}
	if err := s.migrateThrottle(ctx); err != nil {
		return nil, err
	}
	if err := s.loadCeremonyKey(ctx); err != nil {
		return nil, err
	}
	// Subscribe before loading: a change committed between the load and
	// the subscription would otherwise be missed.
	fctx, cancel := context.WithCancel(ctx)
	s.feedStop = cancel
	go func() {
		defer close(s.feedDone)
		if err := s.feed.Subscribe(fctx, s.onChanges); err != nil && fctx.Err() == nil {
			s.log.Error().Err(err).Msg("auth: the store's feed of changes ended; tokens are checked against the store")
		}
	}()
	if err := s.reloadAll(ctx); err != nil {
		cancel()
		<-s.feedDone
		return nil, err
	}
	go s.loop()
	return s, nil
}

// indexed builds the in-memory entry of token record r for its user u
// (nil: none), or nil when the token must not be live: expired, of a
// missing or disabled user, or of one whose grants no longer expand. A
// token carries no more than its user has under the policy loaded now
// (bundles and grants may have changed since it was issued).
func (s *Service) indexed(r *tokenRecord, u *userRecord, now time.Time) *liveToken {
	if u == nil || u.Disabled || !now.Before(r.Expires) {
		return nil
	}
	have, err := s.userCaps(u)
	if err != nil {
		s.log.Warn().Str("user", u.Name).Err(err).Msg("auth: a user's grants no longer expand under the policy; their tokens are not loaded")
		return nil
	}
	rc := *r
	rc.Caps = intersect(r.Caps, have)
	return newLiveToken(&rc)
}

// readToken reads the token of hash h and its user in tx and returns its
// index entry (nil: not live). users, when not nil, caches the users read
// in tx.
func (s *Service) readToken(tx store.Tx, h [32]byte, now time.Time, users map[string]*userRecord) (*liveToken, error) {
	v := tx.Bucket(bucketTokens).Get(h[:])
	if v == nil {
		return nil, nil
	}
	var r tokenRecord
	if json.Unmarshal(v, &r) != nil {
		return nil, nil
	}
	u, ok := users[r.User]
	if !ok {
		var err error
		if u, err = getUser(tx, r.User); err != nil {
			return nil, err
		}
		if users != nil {
			users[r.User] = u
		}
	}
	return s.indexed(&r, u, now), nil
}

// reloadAll rebuilds the in-memory index from the store (at Open, and when
// the feed says changes may have been missed).
func (s *Service) reloadAll(ctx context.Context) error {
	now := s.now()
	fresh := map[[32]byte]*liveToken{}
	err := s.view(ctx, func(tx store.Tx) error {
		clear(fresh) // View's fn may run again
		users := map[string]*userRecord{}
		err := tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u userRecord
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("auth: user %q: corrupt record: %w", k, err)
			}
			users[u.Name] = &u
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			var r tokenRecord
			if len(k) != 32 || json.Unmarshal(v, &r) != nil {
				return nil // skipped; purged by the next flush
			}
			if lt := s.indexed(&r, users[r.User], now); lt != nil {
				fresh[[32]byte(k)] = lt
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	for k, lt := range fresh {
		if old := s.tokens[k]; old != nil {
			lt.keepNewer(old)
		}
	}
	s.tokens = fresh
	s.mu.Unlock()
	return nil
}

// onChanges is the feed's subscriber: it reloads, from the store, every
// cached record another replica (or this one) changed, so that the index
// holds what the store holds. A changed user reloads each of their
// tokens (disabled: dropped; grants changed: narrowed).
func (s *Service) onChanges(batch []store.Change) {
	var keys [][32]byte
	seen := map[[32]byte]bool{}
	add := func(k [32]byte) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	for _, c := range batch {
		switch {
		case c.Resync:
			if err := s.reloadAll(context.Background()); err != nil {
				s.log.Error().Err(err).Msg("auth: reloading the token index after a resync")
			}
			return
		case c.Bucket == bucketTokens && len(c.Key) == 32:
			add([32]byte(c.Key))
		case c.Bucket == bucketUsers:
			name := string(c.Key)
			s.mu.RLock()
			for k, lt := range s.tokens {
				if lt.user == name {
					add(k)
				}
			}
			s.mu.RUnlock()
		}
	}
	if len(keys) == 0 {
		return
	}
	now := s.now()
	got := make([]*liveToken, len(keys))
	err := s.view(context.Background(), func(tx store.Tx) error {
		users := map[string]*userRecord{}
		for i, k := range keys {
			var err error
			if got[i], err = s.readToken(tx, k, now, users); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// The store cannot be read: drop what changed rather than keep
		// trusting it (a token may be revoked); a resync reloads it.
		s.log.Error().Err(err).Msg("auth: reloading changed tokens; dropping them from the index")
		s.drop(keys)
		return
	}
	s.mu.Lock()
	for i, k := range keys {
		if got[i] == nil {
			delete(s.tokens, k)
			continue
		}
		if old := s.tokens[k]; old != nil {
			got[i].keepNewer(old)
		}
		s.tokens[k] = got[i]
	}
	s.mu.Unlock()
}

func (s *Service) loop() {
	defer close(s.done)
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.flush(); err != nil {
				s.log.Warn().Err(err).Msg("auth: writing batched updates")
			}
		}
	}
}

// Close stops the background writer and the feed subscription and writes
// pending updates. It does not close the store, which the caller owns.
func (s *Service) Close() error {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.feedStop()
		<-s.feedDone
		s.closeErr = s.flush()
	})
	return s.closeErr
}

// flush writes idle timestamps, deletes expired tokens from the index and
// the store, and prunes lockout records of names that are not users.
func (s *Service) flush() error {
	now := s.now()
	type upd struct {
		key  [32]byte
		used time.Time
	}
	var used []upd
	var expired [][32]byte
	s.mu.Lock()
	for k, lt := range s.tokens {
		if !lt.alive(now.UnixNano(), s.set.tokenIdle) {
			expired = append(expired, k)
			delete(s.tokens, k)
			continue
		}
		if u := lt.lastUsed.Load(); u != lt.flushed {
			lt.flushed = u
			used = append(used, upd{k, time.Unix(0, u).UTC()})
		}
	}
	s.mu.Unlock()
	ctx := context.Background()
	var dead [][]byte
	err := s.view(ctx, func(tx store.Tx) error {
		dead = dead[:0]
		return tx.Bucket(bucketRefresh).ForEach(func(k, v []byte) error {
			var r refreshRecord
			if json.Unmarshal(v, &r) != nil || !now.Before(r.Expires) {
				dead = append(dead, slices.Clone(k))
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	if err := s.pruneLockouts(ctx, now); err != nil {
		return err
	}
	if err := s.pruneCeremonies(ctx, now); err != nil {
		return err
	}
	if len(expired) == 0 && len(used) == 0 && len(dead) == 0 {
		return nil // nothing to write: no transaction, no fsync
	}
	return s.update(ctx, func(tx store.Tx) error {
		tb := tx.Bucket(bucketTokens)
		for _, k := range expired {
			if err := tb.Delete(k[:]); err != nil {
				return err
			}
		}
		for _, u := range used {
			v := tb.Get(u.key[:])
			if v == nil {
				continue // revoked meanwhile (perhaps by another replica)
			}
			var r tokenRecord
			if json.Unmarshal(v, &r) != nil || !u.used.After(r.LastUsed) {
				continue // another replica saw a later use
			}
			r.LastUsed = u.used
			if err := putJSON(tx, bucketTokens, u.key[:], r); err != nil {
				return err
			}
		}
		rb := tx.Bucket(bucketRefresh)
		for _, k := range dead {
			if err := rb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// memEffect brings the in-memory token index in step with a transaction.
// It is applied in the transaction's BeforeCommit hook, once the audit
// entries are durable, so that on bbolt no other writer can come between
// the store and the index (a revocation can never miss a token being
// issued); undo reverts it should the commit itself then fail. Other
// replicas follow through the store's feed (onChanges).
type memEffect struct{ apply, undo func() }

// commit runs fn in a write transaction and records the events it returns
// in the audit log before the transaction commits: if the log cannot be
// written, the transaction rolls back and nothing changes (fail closed).
// If the change then does not happen although entries were recorded (the
// store's commit fails, or the log fails part-way through the events),
// each recorded entry is followed by a correcting one, so that the log
// never claims a change that did not happen.
//
// fn may run more than once (a serialization failure on PostgreSQL runs
// the transaction again): it computes the events and must have no other
// effect. The audit appends and the memEffects happen in one BeforeCommit
// hook, after fn's last run; if the commit then conflicts with a
// concurrent one (store.ErrConflict), they are undone and corrected, and
// the change is run again, at most maxCommitConflicts times.
func (s *Service) commit(ctx context.Context, fn func(tx store.Tx) ([]audit.Event, error), effects ...memEffect) error {
	for attempt := 1; ; attempt++ {
		applied := false
		var recorded []recordedEvent
		err := s.st.Update(ctx, func(tx store.Tx) error {
			evs, err := fn(tx)
			if err != nil {
				return err
			}
			tx.BeforeCommit(func() error {
				for _, e := range evs {
					idx, err := s.appendEntry(ctx, e)
					if err != nil {
						return fmt.Errorf("%w: %v", ErrUnavailable, err)
					}
					recorded = append(recorded, recordedEvent{e, idx})
				}
				for _, m := range effects {
					m.apply()
				}
				applied = true
				if f := s.failCommit.Load(); f != nil {
					return (*f)() // test hook: an error here rolls back, as a failed commit does
				}
				return nil
			})
			return nil
		})
		if err == nil {
			return nil
		}
		if !applied {
			s.correct(ctx, recorded, "not applied: the audit log failed before all of the change's entries were recorded")
			return storeErr(err)
		}
		s.undo(ctx, effects, recorded)
		if errors.Is(err, store.ErrConflict) && attempt < maxCommitConflicts && ctx.Err() == nil {
			// A concurrent transaction (another replica's, on PostgreSQL)
			// made the commit fail after the entries were recorded; they
			// are corrected, and the whole change is run again on the
			// state that won.
			continue
		}
		return storeErr(fmt.Errorf("%w: the store write failed: %w", ErrUnavailable, err))
	}
}

// maxCommitConflicts bounds how often commit runs a change again after
// its commit conflicted with a concurrent one.
const maxCommitConflicts = 5

// undo reverts the effects of a commit hook whose transaction did not
// commit and records that its entries did not take effect.
func (s *Service) undo(ctx context.Context, effects []memEffect, recorded []recordedEvent) {
	for _, m := range effects {
		if m.undo != nil {
			m.undo()
		}
	}
	s.log.Error().Msg("auth: the store write failed after its audit entries were recorded; recording that they did not take effect")
	s.correct(ctx, recorded, "not applied: the store write failed")
}

// recordedEvent is an event commit recorded, with its index in the log
// (-1 if the recorder does not say).
type recordedEvent struct {
	ev  audit.Event
	idx int64
}

// appender is implemented by recorders that return the index of the entry
// they recorded (*audit.Log does).
type appender interface {
	Append(ctx context.Context, e audit.Event) (int64, error)
}

// appendEntry records e and returns its index in the log, or -1 if the
// recorder does not say.
func (s *Service) appendEntry(ctx context.Context, e audit.Event) (int64, error) {
	if a, ok := s.audit.(appender); ok {
		return a.Append(ctx, e)
	}
	return -1, s.audit.Record(ctx, e)
}

// correct records, for each entry of a change that did not take effect,
// an entry with outcome error naming the one it corrects (OWASP ASVS 5.0
// V16.3: the log records outcomes truthfully), as ca does. It is written
// even if ctx was cancelled; a failure is logged (the log is then most
// likely down, and the caller answers 503).
func (s *Service) correct(ctx context.Context, recorded []recordedEvent, reason string) {
	ctx = context.WithoutCancel(ctx)
	for _, r := range recorded {
		meta := map[string]string{"corrects": r.ev.Name + " " + r.ev.Resource + " " + r.ev.Time.UTC().Format(time.RFC3339Nano)}
		if r.idx >= 0 {
			meta["corrects_index"] = strconv.FormatInt(r.idx, 10)
		}
		err := s.audit.Record(ctx, audit.Event{
			Time: s.now().UTC(), Name: r.ev.Name, Outcome: audit.OutcomeError,
			Principal: r.ev.Principal, Resource: r.ev.Resource, Client: r.ev.Client,
			Reason: reason, Meta: meta,
		})
		if err != nil {
			s.log.Error().Err(err).Str("event", r.ev.Name).Str("resource", r.ev.Resource).Msg("auth: could not record that a recorded change did not happen")
		}
	}
}

// record writes one audit event outside a transaction.
func (s *Service) record(ctx context.Context, e audit.Event) error {
	if err := s.audit.Record(ctx, e); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// actor names who acts, for audit entries: the authenticated principal of
// ctx, or nobody (an anonymous login attempt).
func actor(ctx context.Context) string {
	if p := authz.PrincipalFrom(ctx); p != nil && p.ID != "" {
		return p.ID
	}
	return ""
}

// localPrincipal is who acts when hearth runs an admin step without a
// server (hearth init): the owner at the machine, as on the admin socket.
var localPrincipal = &authz.Principal{ID: "user:local", Kind: authz.KindUser, Method: authz.MethodLocal, Zone: authz.ZoneLAN}

// canonicalName is the form of a typed user name that is looked up and
// throttled: trimmed and lowercased (user names are lowercase), so that
// "Alice" finds alice and shares her failure count.
func canonicalName(n string) string {
	if len(n) > 256 {
		return n // not a valid name anyway; throttled under its hash
	}
	return strings.ToLower(strings.TrimSpace(n))
}

func (s *Service) event(ctx context.Context, name, outcome, resource, reason, client string, meta map[string]string) audit.Event {
	if client != "" && s.zoneOf != nil {
		if meta == nil {
			meta = map[string]string{}
		}
		meta["zone"] = string(s.zoneOf(client))
	}
	return audit.Event{Time: s.now().UTC(), Name: name, Outcome: outcome, Principal: actor(ctx), Resource: resource, Reason: reason, Client: client, Meta: meta}
}

// validName reports whether name is an acceptable user name.
func validName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// SetPolicy makes p the policy new grants, logins and token scopes are
// expanded with (a configuration reload); p must not be nil. Tokens already
// issued keep their capabilities until they expire or the server restarts
// (load cuts them down to what their user has under the policy then); the
// gateway decides every request under the new policy at once.
func (s *Service) SetPolicy(p *authz.Policy) { s.policy.Store(p) }
