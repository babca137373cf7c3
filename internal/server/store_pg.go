package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/httpx"
	"github.com/hearth-home/hearth/internal/metrics"
	"github.com/hearth-home/hearth/internal/pgaudit"
	"github.com/hearth-home/hearth/internal/store/pgstore"

	"github.com/hearth-home/hearth/internal/store"
)

// openPostgres opens the PostgreSQL store every replica shares: it checks
// the DSN again (pgstore.CheckDSN), migrates the schema under an advisory
// lock (replicas starting together on an empty database do not race) and
// starts the change feed.
func openPostgres(ctx context.Context, dsn string, log zerolog.Logger) (store.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := pgstore.Open(ctx, dsn, pgstore.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("server: opening the PostgreSQL store: %w (check store.dsn / --store-dsn, and that the database is up)", err)
	}
	return st, nil
}

// pooled is a store with a PostgreSQL connection pool (pgstore).
type pooled interface{ Pool() *pgxpool.Pool }

// storeCollectors are the store's metrics beyond bbolt's: the pool's
// figures on PostgreSQL.
func (s *Server) storeCollectors() []prometheus.Collector {
	if p, ok := s.store.(pooled); ok {
		return []prometheus.Collector{metrics.PoolCollector(p.Pool())}
	}
	return nil
}

// auditHandler is the file log's handler h, or on PostgreSQL an answer
// saying where the history is read instead.
func (s *Server) auditHandler(h func(*audit.Log) http.Handler) http.Handler {
	if s.audit != nil {
		return h(s.audit)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.Error(w, http.StatusNotImplemented, "audit_in_postgres",
			"this hearth keeps its audit history in PostgreSQL: read it with hearth audit verify --store-dsn DSN, or export it to files with hearth audit export")
	})
}

// auditReady is readyz's audit check: the file log's own state, or on
// PostgreSQL whether some replica holds the sequencer's advisory lock
// (without a sequencer no entry is covered by a checkpoint, so every
// audited request waits and then fails).
func (s *Server) auditReady(ctx context.Context) error {
	if s.audit != nil {
		return s.audit.Err()
	}
	p, ok := s.store.(pooled)
	if !ok {
		return errors.New("server: no audit log")
	}
	// A bigint advisory lock shows in pg_locks as classid = its high 32
	// bits and objid = its low 32 bits, objsubid 1 (PostgreSQL 15 manual
	// §54.12 pg_locks).
	var held bool
	err := p.Pool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND d.datname = current_database()
		AND l.classid::bigint = ($1::bigint >> 32) AND l.objid::bigint = ($1::bigint & 4294967295))`, pgaudit.LockKey).Scan(&held)
	if err != nil {
		return fmt.Errorf("server: asking PostgreSQL for the audit sequencer: %w", err)
	}
	if !held {
		return errors.New("server: no replica holds the audit sequencer's lock")
	}
	return nil
}
