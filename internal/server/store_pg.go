package server

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearth-home/hearth/internal/metrics"

	"github.com/hearth-home/hearth/internal/store"
)

// openPostgres opens the shared PostgreSQL store.
func openPostgres(context.Context, string) (store.Store, error) {
	return nil, errors.New("server: store.driver postgres: this build has no PostgreSQL store driver yet (issue 12, in progress); use the embedded store (remove the store section and --store-dsn)")
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
