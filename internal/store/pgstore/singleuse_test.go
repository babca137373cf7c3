package pgstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hearth-home/hearth/internal/pgtest"
	"github.com/hearth-home/hearth/internal/store"
)

// racePools races racers goroutines, alternating between the pools, on
// try (nil is a win), trials times (see pgtest.Race).
func racePools(pools []*pgxpool.Pool, racers, trials int, setup func(trial int), try func(q Querier, trial int) error) []int {
	return pgtest.Race(racers, trials, setup, func(trial, r int) bool { return try(pools[r%len(pools)], trial) == nil })
}

func exactlyOne(t *testing.T, what string, wins []int) {
	t.Helper()
	for trial, n := range wins {
		if n != 1 {
			t.Errorf("%s, trial %d: %d consumers succeeded, want exactly 1", what, trial, n)
		}
	}
}

// twoReplicas returns a migrated database with one user and two pools (two
// replicas).
func twoReplicas(t *testing.T) (*pgxpool.Pool, []*pgxpool.Pool) {
	t.Helper()
	db, pool := migrated(t)
	if _, err := pool.Exec(context.Background(), "INSERT INTO hearth.users (name, created) VALUES ('alice', now())"); err != nil {
		t.Fatal(err)
	}
	return pool, []*pgxpool.Pool{pool, db.Pool(t)}
}

func mustExec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

// Single use across replicas, for each secret: 8 racers on two pools, 100
// secrets each, exactly one consumer per secret; the others are told
// ErrUsed (refresh tokens) or refused otherwise. For TOTP each trial is a
// new time step that all racers present.
func TestSingleUseAcrossReplicas(t *testing.T) {
	const racers, trials = 8, 100
	ctx := context.Background()
	now := time.Now()
	pool, pools := twoReplicas(t)
	hash := func(kind string, trial int) [32]byte { return sha256.Sum256(fmt.Appendf(nil, "%s-%d", kind, trial)) }

	t.Run("refresh token", func(t *testing.T) {
		var losers sync.Map
		wins := racePools(pools, racers, trials, func(trial int) {
			h := hash("rt", trial)
			mustExec(t, pool, "INSERT INTO hearth.refresh_tokens (hash, user_name, family, caps, auth_time, expires, method)"+
				" VALUES ($1, 'alice', 'f', '{status}', now(), now() + interval '1 hour', 'password')", h[:])
		}, func(q Querier, trial int) error {
			_, err := ConsumeRefreshToken(ctx, q, hash("rt", trial), now)
			if err != nil {
				losers.Store(err, true)
			}
			return err
		})
		exactlyOne(t, "refresh token", wins)
		losers.Range(func(k, _ any) bool {
			if !errors.Is(k.(error), store.ErrUsed) {
				t.Errorf("a losing refresh gets %v, want ErrUsed", k)
			}
			return true
		})
	})
	t.Run("recovery code", func(t *testing.T) {
		exactlyOne(t, "recovery code", racePools(pools, racers, trials, func(trial int) {
			mustExec(t, pool, "INSERT INTO hearth.recovery_codes (user_name, locator, hash) VALUES ('alice', $1, 'phc')", fmt.Sprint(trial))
		}, func(q Querier, trial int) error {
			_, err := ConsumeRecoveryCode(ctx, q, "alice", fmt.Sprint(trial))
			return err
		}))
	})
	t.Run("reset code", func(t *testing.T) {
		exactlyOne(t, "reset code", racePools(pools, racers, trials, func(trial int) {
			h := hash("reset", trial)
			mustExec(t, pool, "INSERT INTO hearth.reset_codes (user_name, hash, expires) VALUES ('alice', $1, now() + interval '1 hour')"+
				" ON CONFLICT (user_name) DO UPDATE SET hash = EXCLUDED.hash, expires = EXCLUDED.expires", h[:])
		}, func(q Querier, trial int) error {
			return ConsumeResetCode(ctx, q, "alice", hash("reset", trial), now)
		}))
	})
	t.Run("TOTP code", func(t *testing.T) {
		exactlyOne(t, "TOTP step", racePools(pools, racers, trials, func(int) {}, func(q Querier, trial int) error {
			return AdvanceTOTPStep(ctx, q, "alice", uint64(1000+trial))
		}))
	})
	t.Run("enrollment token", func(t *testing.T) {
		exactlyOne(t, "enrollment", racePools(pools, racers, trials, func(trial int) {
			mustExec(t, pool, "INSERT INTO hearth.devices (name, lifetime_ns, created_at, incarnation, token_id, token_expires)"+
				" VALUES ($1, 3600000000000, now(), $1, 'jti', now() + interval '15 minutes')", fmt.Sprintf("pi-%d", trial))
		}, func(q Querier, trial int) error {
			return ConsumeEnrollment(ctx, q, fmt.Sprintf("pi-%d", trial), "jti", now)
		}))
	})
}

// Expired or unknown secrets are not consumed.
func TestSingleUseRefusesExpiredAndUnknown(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	pool, _ := twoReplicas(t)
	h := sha256.Sum256([]byte("old"))
	mustExec(t, pool, "INSERT INTO hearth.refresh_tokens (hash, user_name, family, caps, auth_time, expires, method)"+
		" VALUES ($1, 'alice', 'f', '{}', now(), $2, 'password')", h[:], now.Add(-time.Second))
	if _, err := ConsumeRefreshToken(ctx, pool, h, now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired refresh token: %v, want ErrNotFound", err)
	}
	if _, err := ConsumeRefreshToken(ctx, pool, sha256.Sum256([]byte("none")), now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown refresh token: %v, want ErrNotFound", err)
	}
	mustExec(t, pool, "INSERT INTO hearth.reset_codes (user_name, hash, expires) VALUES ('alice', $1, $2)", h[:], now.Add(-time.Second))
	if err := ConsumeResetCode(ctx, pool, "alice", h, now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired reset code: %v, want ErrNotFound", err)
	}
	mustExec(t, pool, "INSERT INTO hearth.devices (name, lifetime_ns, created_at, incarnation, token_id, token_expires, revoked)"+
		" VALUES ('gone', 1, now(), 'gone', 'jti', now() + interval '1 hour', true)")
	if err := ConsumeEnrollment(ctx, pool, "gone", "jti", now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoked device's enrollment: %v, want ErrNotFound", err)
	}
}

// 100 failed logins spread over two replicas, 10 at a time: every charge
// is counted (no lost update), each sees a distinct count, and so exactly
// as many as the limit (5) are let through to the password check.
func TestChargeAttemptAcrossReplicas(t *testing.T) {
	const attempts, parallel, limit = 100, 10, 5
	ctx := context.Background()
	pool, pools := twoReplicas(t)
	counts := make(chan int, attempts)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range attempts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			l, err := ChargeAttempt(ctx, pools[i%2], store.LockoutLogin, "alice", time.Now())
			if err != nil {
				t.Error(err)
				return
			}
			counts <- l.Failures
		}()
	}
	wg.Wait()
	close(counts)
	var got []int
	through := 0
	for c := range counts {
		got = append(got, c)
		if c <= limit {
			through++
		}
	}
	sort.Ints(got)
	for i, c := range got {
		if c != i+1 {
			t.Fatalf("charge counts %v: want each of 1..%d once", got, attempts)
		}
	}
	if through != limit {
		t.Errorf("%d attempts reached the password check, want %d", through, limit)
	}
	var stored int
	pool.QueryRow(ctx, "SELECT failures FROM hearth.lockouts WHERE kind = 'login' AND name = 'alice'").Scan(&stored)
	if stored != attempts {
		t.Errorf("stored failures = %d, want %d", stored, attempts)
	}
}
