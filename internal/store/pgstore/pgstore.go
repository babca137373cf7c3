// Package pgstore will be the PostgreSQL implementation of
// internal/store.Store. Today it holds only hearth's schema (migrations/,
// applied by [Migrate]); the Store methods come in the next change (see
// /work/notes/issue-12.md).
//
// hearth's tables live in schema [Schema]; smallstep's CA tables in
// internal/pgnosql's schema (hearth_ca), in the same database.
package pgstore

import (
	"context"
	"embed"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hearth-home/hearth/internal/pgmigrate"
)

// Schema is the PostgreSQL schema of hearth's own tables.
const Schema = "hearth"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations returns hearth's schema migrations, in order.
func Migrations() ([]pgmigrate.Migration, error) {
	return pgmigrate.Load(migrationFiles, "migrations")
}

// Migrate brings hearth's schema up to date, safely when several replicas
// start at once (see internal/pgmigrate), and returns the versions it
// applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]int64, error) {
	migs, err := Migrations()
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	done, err := pgmigrate.Run(ctx, pool, Schema, migs)
	if err != nil {
		return done, fmt.Errorf("pgstore: %w", err)
	}
	return done, nil
}
