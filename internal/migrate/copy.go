package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/smallstep/nosql/database"

	"github.com/hearth-home/hearth/internal/pgnosql"
	"github.com/hearth-home/hearth/internal/store"
)

// errTargetHolds is returned from inside a copy transaction that finds a
// record already in the target (another writer got there after the
// emptiness check).
var errTargetHolds = errors.New("the target already holds records in bucket")

// copyStore copies the named buckets of src into dst in one Update: the
// buckets must be empty in dst, and before the transaction commits it
// tallies them again inside it and compares with want (the source's
// tallies), so a copy that differs is rolled back, never committed. Update's
// fn may run more than once (store.Store); it starts from scratch each time.
func copyStore(ctx context.Context, src store.Store, names []string, want Tallies, dst store.Store) error {
	if err := dst.Declare(ctx, names...); err != nil {
		return fmt.Errorf("migrate: declaring the buckets in the target: %w", err)
	}
	err := dst.Update(ctx, func(tx store.Tx) error {
		for _, n := range names {
			b := tx.Bucket(n)
			if b == nil {
				return fmt.Errorf("migrate: bucket %s was declared but the target does not have it", n)
			}
			if err := b.ForEach(func(k, v []byte) error { return fmt.Errorf("%w %s", errTargetHolds, n) }); err != nil {
				return err
			}
		}
		if err := src.View(ctx, func(stx store.Tx) error {
			for _, n := range names {
				sb, db := stx.Bucket(n), tx.Bucket(n)
				if err := sb.ForEach(db.Put); err != nil {
					return fmt.Errorf("migrate: copying bucket %s: %w", n, err)
				}
			}
			return nil
		}); err != nil {
			return err
		}
		got, err := txTallies(tx, names)
		if err != nil {
			return err
		}
		if d := want.diff(got); d != "" {
			return fmt.Errorf("%w: %s: %s (nothing of it was committed)", ErrMismatch, StoreFile, d)
		}
		return nil
	})
	if errors.Is(err, errTargetHolds) {
		return fmt.Errorf("%w: %v", ErrNotEmpty, err)
	}
	return err
}

// clearStore deletes every record of the named buckets of st: the undo of
// a copyStore into a target that was empty.
func clearStore(ctx context.Context, st store.Store, names []string) error {
	return st.Update(ctx, func(tx store.Tx) error {
		for _, n := range names {
			b := tx.Bucket(n)
			if b == nil {
				continue
			}
			var keys [][]byte
			if err := b.ForEach(func(k, _ []byte) error { keys = append(keys, bytes.Clone(k)); return nil }); err != nil {
				return err
			}
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// copyCA copies the CA database's tables (smallstep nosql buckets) from
// src into dst: one nosql transaction (one PostgreSQL transaction) that
// creates each table and sets each record. nosql offers no read inside its
// transactions to compare before the commit, so the tables are listed and
// tallied after it; on a difference the caller undoes the copy
// (clearCA). Every table and record is held in memory for the one
// transaction: a household CA's database is small (a few kB per
// certificate).
func copyCA(ctx context.Context, src store.Store, names []string, want Tallies, dst *pgnosql.DB) error {
	tx := new(database.Tx)
	for _, n := range names {
		tx.CreateTable([]byte(n))
	}
	if err := src.View(ctx, func(stx store.Tx) error {
		for _, n := range names {
			if err := stx.Bucket(n).ForEach(func(k, v []byte) error {
				tx.Set([]byte(n), bytes.Clone(k), bytes.Clone(v))
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("migrate: reading %s: %w", CADBFile, err)
	}
	if err := dst.Update(tx); err != nil {
		return fmt.Errorf("migrate: writing the CA database: %w", err)
	}
	got := Tallies{}
	for _, n := range names {
		es, err := dst.List([]byte(n))
		if err != nil {
			return fmt.Errorf("migrate: reading back the CA database: %w", err)
		}
		t := newTallier()
		for _, e := range es {
			t.add(e.Key, e.Value)
		}
		got[n] = t.tally()
	}
	if d := want.diff(got); d != "" {
		return fmt.Errorf("%w: %s: %s", ErrMismatch, CADBFile, d)
	}
	return nil
}

// clearCA empties the named tables of schema in one transaction: the undo
// of a copyCA into a target whose tables were empty.
func clearCA(ctx context.Context, pool *pgxpool.Pool, schema string, names []string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, n := range names {
			if _, err := tx.Exec(ctx, "DELETE FROM "+pgx.Identifier{schema, n}.Sanitize()); err != nil {
				return err
			}
		}
		return nil
	})
}
