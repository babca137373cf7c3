// Package pgnosql is smallstep's nosql database interface
// (github.com/smallstep/nosql/database.DB) over PostgreSQL through pgx/v5,
// for the CA's database when hearth runs as several replicas. Give it to the
// authority with [NewAuthDB] and authority.WithDatabase.
//
// # Why not smallstep's own PostgreSQL driver
//
// smallstep's nosql/postgresql (v0.8.0) implements CmpAndSwap as
// SELECT … FOR UPDATE followed by an upsert. When the key does not exist
// yet, FOR UPDATE locks nothing, so two transactions both read "absent"
// and both upsert: both report a successful swap. step-ca relies on exactly
// that case for single use — UseToken (one-time tokens), Revoke and ACME's
// account-by-key all swap from nil — so across replicas a one-time token
// could be used twice. Likewise its Update reads without locking, so ACME's
// Get-then-Delete of a nonce can succeed twice.
//
// Here CmpAndSwap is one statement whose outcome is its row count:
//
//   - from an absent (or empty) value: INSERT … ON CONFLICT (nkey) DO UPDATE
//     … WHERE the stored value is empty — the insert of a missing key and
//     the conflict check are atomic in PostgreSQL, and a conflicting
//     racer waits for the winner's commit and then sees its value;
//   - from a value: UPDATE … WHERE nkey = $1 AND nvalue = $old — a racer
//     blocked on the row lock re-checks the condition on the committed row
//     (READ COMMITTED's re-evaluation), so it fails.
//
// Rows affected = 1 is a swap. The "empty" case mirrors the bbolt driver,
// whose bytes.Equal treats a missing and an empty value alike. In Update,
// Get takes the row lock (SELECT … FOR UPDATE), so a read followed by a
// delete or write in the same transaction is atomic too.
//
// # Tables
//
// Each nosql bucket is a table (nkey bytea primary key, nvalue bytea) in
// one schema of its own (default "hearth_ca"), apart from hearth's tables.
// Schema and table creation is serialised with a transaction-scoped
// advisory lock, because concurrent CREATE … IF NOT EXISTS statements fail
// with a unique violation (23505) on PostgreSQL's catalogs: replicas
// starting at once on an empty database both succeed.
//
// # Trust boundary
//
// Keys and values are the authority's; error messages name the bucket and
// key but never the value (used_ott stores the token itself).
package pgnosql

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/smallstep/nosql/database"
)

// DefaultSchema is the schema smallstep's tables live in unless Schema says
// otherwise.
const DefaultSchema = "hearth_ca"

// DefaultTimeout bounds each call unless Timeout says otherwise: nosql's
// interface takes no context, and a call must not hang on a lost server.
const DefaultTimeout = 30 * time.Second

// ddlLockKey is the advisory-lock key (pg_advisory_xact_lock) that
// serialises this package's CREATE SCHEMA / CREATE TABLE / DROP TABLE, so
// that they do not race across replicas. Chosen at random; hearth's other
// advisory locks use other keys.
const ddlLockKey int64 = 0x6865617274684341 // "hearthCA"

// DB implements database.DB on a pgx pool.
type DB struct {
	// Schema is the schema holding the tables; "" means DefaultSchema.
	Schema string
	// Timeout bounds each call; 0 means DefaultTimeout.
	Timeout time.Duration

	pool    *pgxpool.Pool
	ownPool bool
}

var _ database.DB = (*DB)(nil)

// Open connects to the PostgreSQL database named by dsn (a pgx connection
// string or postgres:// URL) and creates schema (DefaultSchema when "") if
// it does not exist yet.
func Open(dsn, schema string) (*DB, error) {
	db := &DB{Schema: schema}
	if err := db.Open(dsn); err != nil {
		return nil, err
	}
	return db, nil
}

// New uses an existing pool (which the caller closes; Close does not) and
// creates schema (DefaultSchema when "") if it does not exist yet.
func New(pool *pgxpool.Pool, schema string) (*DB, error) {
	db := &DB{Schema: schema, pool: pool}
	if err := db.createSchema(); err != nil {
		return nil, err
	}
	return db, nil
}

// Open implements database.DB. The nosql options (database name, value
// directory, badger mode) do not apply; a database name given with
// database.WithDatabase overrides the DSN's.
func (db *DB) Open(dsn string, opt ...database.Option) error {
	opts := &database.Options{}
	for _, o := range opt {
		if err := o(opts); err != nil {
			return err
		}
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("pgnosql: parsing the DSN: %w", err)
	}
	if opts.Database != "" {
		cfg.ConnConfig.Database = opts.Database
	}
	ctx, cancel := db.ctx()
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("pgnosql: connecting: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return fmt.Errorf("pgnosql: connecting: %w", err)
	}
	db.pool, db.ownPool = pool, true
	if err := db.createSchema(); err != nil {
		pool.Close()
		db.pool = nil
		return err
	}
	return nil
}

// Close implements database.DB: it closes the pool if Open made it.
func (db *DB) Close() error {
	if db.ownPool && db.pool != nil {
		db.pool.Close()
	}
	return nil
}

func (db *DB) ctx() (context.Context, context.CancelFunc) {
	d := db.Timeout
	if d <= 0 {
		d = DefaultTimeout
	}
	return context.WithTimeout(context.Background(), d)
}

func (db *DB) schema() string {
	if db.Schema == "" {
		return DefaultSchema
	}
	return db.Schema
}

// table is the quoted, schema-qualified name of bucket's table.
func (db *DB) table(bucket []byte) string {
	return pgx.Identifier{db.schema(), string(bucket)}.Sanitize()
}

// querier is what a pool and a transaction have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ddl runs stmt under the DDL advisory lock, in a transaction of its own
// or in tx.
func (db *DB) ddl(ctx context.Context, tx pgx.Tx, stmt string) error {
	if tx == nil {
		return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error { return db.ddl(ctx, tx, stmt) })
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", ddlLockKey); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, stmt)
	return err
}

func (db *DB) createSchema() error {
	ctx, cancel := db.ctx()
	defer cancel()
	if err := db.ddl(ctx, nil, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{db.schema()}.Sanitize()); err != nil {
		return fmt.Errorf("pgnosql: creating schema %s: %w", db.schema(), err)
	}
	return nil
}

func createTableSQL(table string) string {
	return "CREATE TABLE IF NOT EXISTS " + table +
		" (nkey bytea PRIMARY KEY CHECK (octet_length(nkey) <= 255), nvalue bytea)"
}

// missingTable reports PostgreSQL's undefined_table, which nosql callers
// expect as database.ErrNotFound (the bbolt driver's missing bucket).
func missingTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42P01"
}

// wrap turns err into the package's error for op on bucket/key, with
// database.ErrNotFound for a missing table or row.
func wrap(err error, op string, bucket, key []byte) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgx.ErrNoRows), missingTable(err):
		return fmt.Errorf("pgnosql: %s %s/%s: %w", op, bucket, key, database.ErrNotFound)
	default:
		return fmt.Errorf("pgnosql: %s %s/%s: %w", op, bucket, key, err)
	}
}

// CreateTable implements database.DB.
func (db *DB) CreateTable(bucket []byte) error {
	ctx, cancel := db.ctx()
	defer cancel()
	if err := db.ddl(ctx, nil, createTableSQL(db.table(bucket))); err != nil {
		return fmt.Errorf("pgnosql: creating table %s: %w", bucket, err)
	}
	return nil
}

// DeleteTable implements database.DB; a missing table is
// database.ErrNotFound.
func (db *DB) DeleteTable(bucket []byte) error {
	ctx, cancel := db.ctx()
	defer cancel()
	return wrap(db.ddl(ctx, nil, "DROP TABLE "+db.table(bucket)), "dropping table", bucket, nil)
}

// Get implements database.DB.
func (db *DB) Get(bucket, key []byte) ([]byte, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	return db.get(ctx, db.pool, bucket, key, false)
}

func (db *DB) get(ctx context.Context, q querier, bucket, key []byte, lock bool) ([]byte, error) {
	stmt := "SELECT nvalue FROM " + db.table(bucket) + " WHERE nkey = $1"
	if lock {
		stmt += " FOR UPDATE"
	}
	var v []byte
	if err := q.QueryRow(ctx, stmt, key).Scan(&v); err != nil {
		return nil, wrap(err, "get", bucket, key)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// Set implements database.DB.
func (db *DB) Set(bucket, key, value []byte) error {
	ctx, cancel := db.ctx()
	defer cancel()
	return db.set(ctx, db.pool, bucket, key, value)
}

func (db *DB) set(ctx context.Context, q querier, bucket, key, value []byte) error {
	_, err := q.Exec(ctx, "INSERT INTO "+db.table(bucket)+" (nkey, nvalue) VALUES ($1, $2)"+
		" ON CONFLICT (nkey) DO UPDATE SET nvalue = EXCLUDED.nvalue", key, value)
	return wrap(err, "set", bucket, key)
}

// Del implements database.DB; deleting a missing key is not an error.
func (db *DB) Del(bucket, key []byte) error {
	ctx, cancel := db.ctx()
	defer cancel()
	return db.del(ctx, db.pool, bucket, key)
}

func (db *DB) del(ctx context.Context, q querier, bucket, key []byte) error {
	_, err := q.Exec(ctx, "DELETE FROM "+db.table(bucket)+" WHERE nkey = $1", key)
	return wrap(err, "delete", bucket, key)
}

// List implements database.DB, in key order.
func (db *DB) List(bucket []byte) ([]*database.Entry, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	rows, err := db.pool.Query(ctx, "SELECT nkey, nvalue FROM "+db.table(bucket)+" ORDER BY nkey")
	if err != nil {
		return nil, wrap(err, "list", bucket, nil)
	}
	var out []*database.Entry
	for rows.Next() {
		e := &database.Entry{Bucket: bucket}
		if err := rows.Scan(&e.Key, &e.Value); err != nil {
			rows.Close()
			return nil, wrap(err, "list", bucket, nil)
		}
		out = append(out, e)
	}
	return out, wrap(rows.Err(), "list", bucket, nil)
}

// CmpAndSwap implements database.DB with one statement (see the package
// documentation). It returns newValue and true on a swap; otherwise the
// value found afterwards (nil when absent) and false.
func (db *DB) CmpAndSwap(bucket, key, oldValue, newValue []byte) ([]byte, bool, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	return db.cmpAndSwap(ctx, db.pool, bucket, key, oldValue, newValue)
}

func (db *DB) cmpAndSwap(ctx context.Context, q querier, bucket, key, oldValue, newValue []byte) ([]byte, bool, error) {
	t := db.table(bucket)
	var (
		tag pgconn.CommandTag
		err error
	)
	if len(oldValue) == 0 {
		tag, err = q.Exec(ctx, "INSERT INTO "+t+" AS cur (nkey, nvalue) VALUES ($1, $2)"+
			" ON CONFLICT (nkey) DO UPDATE SET nvalue = EXCLUDED.nvalue"+
			" WHERE coalesce(octet_length(cur.nvalue), 0) = 0", key, newValue)
	} else {
		tag, err = q.Exec(ctx, "UPDATE "+t+" SET nvalue = $3 WHERE nkey = $1 AND nvalue = $2",
			key, oldValue, newValue)
	}
	if err != nil {
		return nil, false, wrap(err, "compare-and-swap", bucket, key)
	}
	if tag.RowsAffected() == 1 {
		return newValue, true, nil
	}
	cur, err := db.get(ctx, q, bucket, key, false)
	if errors.Is(err, database.ErrNotFound) {
		return nil, false, nil
	}
	return cur, false, err
}

// maxAttempts bounds how often Update re-runs a transaction that
// PostgreSQL aborted as a deadlock victim (40P01) or a serialization
// failure (40001): such a transaction changed nothing, so it is safe to
// run again.
const maxAttempts = 3

// Update implements database.DB: every operation of tx in one PostgreSQL
// transaction. Get locks the row it reads (FOR UPDATE) and fails the
// transaction with database.ErrNotFound when the row is missing, as the
// bbolt driver does; CmpAndSwap is the one-statement swap, recording
// Result and Swapped (a failed swap does not roll back the others);
// CmpOrRollback is database.ErrOpNotSupported, as in smallstep's drivers.
func (db *DB) Update(tx *database.Tx) error {
	for _, op := range tx.Operations {
		if op.Cmd == database.CmpOrRollback || op.Cmd > database.CmpOrRollback || op.Cmd < 0 {
			return fmt.Errorf("pgnosql: %s: %w", op.Cmd, database.ErrOpNotSupported)
		}
	}
	var err error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		ctx, cancel := db.ctx()
		err = pgx.BeginFunc(ctx, db.pool, func(ptx pgx.Tx) error { return db.run(ctx, ptx, tx) })
		cancel()
		if !retryable(err) {
			break
		}
	}
	return err
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

func (db *DB) run(ctx context.Context, ptx pgx.Tx, tx *database.Tx) error {
	for _, op := range tx.Operations {
		var err error
		switch op.Cmd {
		case database.CreateTable:
			if err = db.ddl(ctx, ptx, createTableSQL(db.table(op.Bucket))); err != nil {
				err = fmt.Errorf("pgnosql: creating table %s: %w", op.Bucket, err)
			}
		case database.DeleteTable:
			err = wrap(db.ddl(ctx, ptx, "DROP TABLE "+db.table(op.Bucket)), "dropping table", op.Bucket, nil)
		case database.Get:
			op.Result, err = db.get(ctx, ptx, op.Bucket, op.Key, true)
		case database.Set:
			err = db.set(ctx, ptx, op.Bucket, op.Key, op.Value)
		case database.Delete:
			err = db.del(ctx, ptx, op.Bucket, op.Key)
		case database.CmpAndSwap:
			op.Result, op.Swapped, err = db.cmpAndSwap(ctx, ptx, op.Bucket, op.Key, op.CmpValue, op.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
