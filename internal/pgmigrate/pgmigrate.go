// Package pgmigrate applies versioned SQL migrations to a PostgreSQL
// schema, safely when several hearth replicas start at the same moment.
//
// # Migrations
//
// A migration is a file NNNN_name.sql (a positive version, then a name) in
// an fs.FS, usually an embed.FS. Versions are applied in ascending order,
// each in its own transaction together with its row in schema_migrations
// (version, name, SHA-256 of the file, time applied), so a migration is
// applied entirely or not at all. A file may hold several statements.
// Statements run with search_path set to the target schema only, so
// unqualified names land there.
//
// # Concurrency
//
// Run holds a session-level advisory lock (pg_advisory_lock) on one
// connection for the whole run: replicas starting together on an empty
// database queue on the lock, the first applies everything, the others find
// nothing left to do. Without it, concurrent CREATE TABLE IF NOT EXISTS
// statements can fail with a unique violation (23505) on PostgreSQL's
// catalogs. If the process dies mid-run the server drops the lock with the
// connection and the open migration's transaction rolls back.
//
// # Refusals
//
// Run refuses, changing nothing, a database that has a version this
// binary does not know (it was migrated by a newer hearth: upgrade this
// one), and one whose applied migration's file has changed since (a
// migration is never edited once released: add a new one).
package pgmigrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// LockKey is the advisory-lock key Run holds. Chosen at random, distinct
// from hearth's other advisory locks.
const LockKey int64 = 0x6865617274684d47 // "hearthMG"

// Migration is one versioned SQL file.
type Migration struct {
	Version int64
	Name    string // the file name
	SQL     string
	Sum     string // hex SHA-256 of SQL
}

var fileRE = regexp.MustCompile(`^([0-9]+)_[a-z0-9_]+\.sql$`)

// Load reads the migrations in the directory dir of fsys, sorted by
// version. Every file there must be named NNNN_name.sql (lower-case name)
// with a positive, unique version.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	ents, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("pgmigrate: %w", err)
	}
	var out []Migration
	seen := map[int64]string{}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		m := fileRE.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("pgmigrate: %s: not a migration file name (want NNNN_name.sql)", e.Name())
		}
		v, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("pgmigrate: %s: version must be a positive number", e.Name())
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("pgmigrate: %s and %s have the same version %d", other, e.Name(), v)
		}
		seen[v] = e.Name()
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("pgmigrate: %w", err)
		}
		sum := sha256.Sum256(b)
		out = append(out, Migration{Version: v, Name: e.Name(), SQL: string(b), Sum: hex.EncodeToString(sum[:])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// ErrNewerSchema is returned when the database has a migration this binary
// does not know.
var ErrNewerSchema = errors.New("pgmigrate: the database was migrated by a newer version: upgrade this binary")

// ErrChanged is returned when an applied migration's file differs from the
// one applied.
var ErrChanged = errors.New("pgmigrate: an applied migration has changed")

// Run applies to schema (created if missing) the migrations not applied
// yet, under the advisory lock, and returns the versions it applied.
func Run(ctx context.Context, pool *pgxpool.Pool, schema string, migs []Migration) ([]int64, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgmigrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", LockKey); err != nil {
		return nil, fmt.Errorf("pgmigrate: taking the migration lock: %w", err)
	}
	defer func() {
		// A fresh context: the caller's may be done, and the lock must go
		// back (else the connection is dropped, which also releases it).
		if _, err := conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", LockKey); err != nil {
			conn.Conn().Close(context.Background())
		}
	}()
	return run(ctx, conn.Conn(), schema, migs)
}

func run(ctx context.Context, conn *pgx.Conn, schema string, migs []Migration) ([]int64, error) {
	s := pgx.Identifier{schema}.Sanitize()
	table := pgx.Identifier{schema, "schema_migrations"}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+s+"; CREATE TABLE IF NOT EXISTS "+table+
		" (version bigint PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		return nil, fmt.Errorf("pgmigrate: creating %s: %w", table, err)
	}
	applied := map[int64]string{}
	rows, err := conn.Query(ctx, "SELECT version, sha256 FROM "+table)
	if err != nil {
		return nil, fmt.Errorf("pgmigrate: reading %s: %w", table, err)
	}
	for rows.Next() {
		var v int64
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pgmigrate: reading %s: %w", table, err)
		}
		applied[v] = sum
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgmigrate: reading %s: %w", table, err)
	}
	known := map[int64]Migration{}
	for _, m := range migs {
		known[m.Version] = m
	}
	for v, sum := range applied {
		m, ok := known[v]
		if !ok {
			return nil, fmt.Errorf("%w (schema %s has version %d)", ErrNewerSchema, schema, v)
		}
		if m.Sum != sum {
			return nil, fmt.Errorf("%w: %s (applied with SHA-256 %s, now %s)", ErrChanged, m.Name, sum, m.Sum)
		}
	}
	var done []int64
	for _, m := range migs {
		if _, ok := applied[m.Version]; ok {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+s); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+table+" (version, name, sha256) VALUES ($1, $2, $3)", m.Version, m.Name, m.Sum)
			return err
		})
		if err != nil {
			return done, fmt.Errorf("pgmigrate: %s: %w", m.Name, err)
		}
		done = append(done, m.Version)
	}
	return done, nil
}
