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
	"github.com/hearth-home/hearth/internal/metrics"
	"github.com/hearth-home/hearth/internal/pgaudit"
	"github.com/hearth-home/hearth/internal/store/pgstore"
	"github.com/hearth-home/hearth/internal/webui"

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

// auditAdmin serves audit.AdminPath from the file log, or on PostgreSQL
// from the shared history (any replica serves it alike).
func (s *Server) auditAdmin() http.Handler {
	if s.pgAudit != nil {
		return s.pgAudit.AdminHandler()
	}
	return s.audit.AdminHandler()
}

// pgAuditStatus is the web UI's AuditStatus on PostgreSQL: Verify walks
// the shared history (pgaudit.Verify, as `hearth audit verify
// --store-dsn` does) against the replica's own verifier key.
type pgAuditStatus struct {
	log  *pgaudit.Log
	pool *pgxpool.Pool
}

func (p pgAuditStatus) Verify(ctx context.Context) (*audit.VerifyResult, error) {
	return pgaudit.Verify(ctx, p.pool, pgaudit.VerifyOptions{VerifierKey: p.log.VerifierKey()})
}

func (p pgAuditStatus) Checkpoint() []byte {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, msg, err := p.log.Latest(ctx)
	if err != nil {
		return nil
	}
	return msg
}

// auditPages is what the web UI reads the audit history with.
func (s *Server) auditPages() (webui.AuditTail, webui.AuditStatus) {
	if s.pgAudit != nil {
		return s.pgAudit, pgAuditStatus{log: s.pgAudit, pool: s.store.(pooled).Pool()}
	}
	return s.audit, webui.LogStatus{Dir: s.opts.Dir, Log: s.audit}
}

// auditTiles serves the audit history's checkpoint and tiles
// (c2sp.org/tlog-tiles) from the file log, or on PostgreSQL from the
// shared history (any replica serves it alike).
func (s *Server) auditTiles() http.Handler {
	if s.pgAudit != nil {
		return s.pgAudit.Handler()
	}
	return s.audit.Handler()
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
