package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store"
)

// The single-use and lockout statements the PostgreSQL store.Tx will be
// made of, each one statement whose row count decides, so that of
// concurrent callers on any number of replicas exactly one consumes a
// secret and no failed attempt is lost. They run on a pool or inside a
// transaction (Querier).

// Querier is what a pool, a connection and a transaction have in common.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ConsumeRefreshToken marks the refresh token used and returns it, if it
// exists, is unused and has not expired at now. A used one is ErrUsed (the
// caller revokes its family: RFC 9700 §4.14.2); an unknown or expired one
// is ErrNotFound.
func ConsumeRefreshToken(ctx context.Context, q Querier, hash store.TokenHash, now time.Time) (*store.RefreshToken, error) {
	r := &store.RefreshToken{Hash: hash, UsedAt: now}
	var caps []string
	err := q.QueryRow(ctx, "UPDATE "+Schema+".refresh_tokens SET used_at = $2"+
		" WHERE hash = $1 AND used_at IS NULL AND expires > $2"+
		" RETURNING user_name, family, caps, auth_time, expires, mfa, method", hash[:], now).
		Scan(&r.User, &r.Family, &caps, &r.AuthTime, &r.Expires, &r.MFA, &r.Method)
	if errors.Is(err, pgx.ErrNoRows) {
		var used *time.Time
		err = q.QueryRow(ctx, "SELECT used_at FROM "+Schema+".refresh_tokens WHERE hash = $1", hash[:]).Scan(&used)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil, store.ErrNotFound
		case err != nil:
			return nil, unavailable("consuming a refresh token", err)
		case used != nil:
			return nil, store.ErrUsed
		default:
			return nil, store.ErrNotFound // expired
		}
	}
	if err != nil {
		return nil, unavailable("consuming a refresh token", err)
	}
	for _, c := range caps {
		r.Caps = append(r.Caps, authz.Capability(c))
	}
	return r, nil
}

// ConsumeRecoveryCode deletes the user's recovery code under locator and
// returns it; ErrNotFound if there is none (or a concurrent caller took it).
func ConsumeRecoveryCode(ctx context.Context, q Querier, user, locator string) (*store.RecoveryCode, error) {
	c := &store.RecoveryCode{Locator: locator}
	err := q.QueryRow(ctx, "DELETE FROM "+Schema+".recovery_codes WHERE user_name = $1 AND locator = $2 RETURNING hash",
		user, locator).Scan(&c.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, unavailable("consuming a recovery code", err)
	}
	return c, nil
}

// ConsumeResetCode deletes the user's reset code if its hash is hash and it
// has not expired at now; ErrNotFound otherwise.
func ConsumeResetCode(ctx context.Context, q Querier, user string, hash [32]byte, now time.Time) error {
	tag, err := q.Exec(ctx, "DELETE FROM "+Schema+".reset_codes WHERE user_name = $1 AND hash = $2 AND expires > $3",
		user, hash[:], now)
	if err != nil {
		return unavailable("consuming a reset code", err)
	}
	if tag.RowsAffected() != 1 {
		return store.ErrNotFound
	}
	return nil
}

// ConsumeEnrollment marks the device's enrollment token jti used if it is
// the device's current one, unrevoked, unexpired at now and unused; ErrUsed
// if it was used, ErrNotFound otherwise.
func ConsumeEnrollment(ctx context.Context, q Querier, device, jti string, now time.Time) error {
	tag, err := q.Exec(ctx, "UPDATE "+Schema+".devices SET token_used_at = $3, version = version + 1"+
		" WHERE name = $1 AND token_id = $2 AND token_id <> '' AND NOT revoked AND token_used_at IS NULL AND token_expires > $3",
		device, jti, now)
	if err != nil {
		return unavailable("consuming an enrollment token", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var used bool
	err = q.QueryRow(ctx, "SELECT token_used_at IS NOT NULL FROM "+Schema+".devices WHERE name = $1 AND token_id = $2", device, jti).Scan(&used)
	if err == nil && used {
		return store.ErrUsed
	}
	return store.ErrNotFound
}

// ChargeAttempt counts one attempt against (kind, name) — before its
// secret is checked — and returns the state after the charge. The
// increment happens in the statement (failures = failures + 1), so
// concurrent charges on any replica each see a distinct count and none is
// lost.
func ChargeAttempt(ctx context.Context, q Querier, kind store.LockoutKind, name string, now time.Time) (store.Lockout, error) {
	var l store.Lockout
	var until, last *time.Time
	err := q.QueryRow(ctx, "INSERT INTO "+Schema+".lockouts AS l (kind, name, failures, last_failure) VALUES ($1, $2, 1, $3)"+
		" ON CONFLICT (kind, name) DO UPDATE SET failures = l.failures + 1, last_failure = $3"+
		" RETURNING failures, locked_until, disabled, last_failure", string(kind), name, now).
		Scan(&l.Failures, &until, &l.Disabled, &last)
	if err != nil {
		return store.Lockout{}, unavailable("charging an attempt", err)
	}
	if until != nil {
		l.LockedUntil = *until
	}
	if last != nil {
		l.LastFailure = *last
	}
	return l, nil
}

// AdvanceTOTPStep records step as the user's last accepted TOTP time
// step if it is later than the stored one; ErrUsed otherwise (the code, or
// an earlier one, was accepted already: RFC 6238 §5.2).
func AdvanceTOTPStep(ctx context.Context, q Querier, user string, step uint64) error {
	if step > 1<<63-1 {
		return fmt.Errorf("pgstore: TOTP step %d out of range", step)
	}
	tag, err := q.Exec(ctx, "UPDATE "+Schema+".users SET totp_last_step = $2, version = version + 1"+
		" WHERE name = $1 AND totp_last_step < $2", user, int64(step))
	if err != nil {
		return unavailable("recording a TOTP step", err)
	}
	if tag.RowsAffected() != 1 {
		return store.ErrUsed
	}
	return nil
}

func unavailable(what string, err error) error {
	return fmt.Errorf("%w: pgstore: %s: %v", store.ErrUnavailable, what, err)
}
