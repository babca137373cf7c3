package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/internal/config"
	"github.com/hearth-home/hearth/internal/store"
	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// ErrPostgresBackup is the answer of a backup of a server whose state is
// in PostgreSQL: the database is backed up with PostgreSQL's own tools.
var ErrPostgresBackup = errors.New("the state of this hearth is in PostgreSQL (store.driver postgres), which hearth backup does not copy: back the database up with pg_dump (e.g. pg_dump --format=custom --file hearth.pgdump DBNAME), and the data dir's keys and hearth.yaml by copying the data dir (ca/, audit/ keys, hearth.yaml) while hearth is stopped, to a place only you can read")

// openStore opens the store hearth.yaml's store section names: the data
// dir's hearth.db (bbolt, an exclusive file lock: one process), or the
// PostgreSQL database every replica shares.
func openStore(ctx context.Context, dir string, sc config.Store, log zerolog.Logger) (store.Store, error) {
	switch sc.DriverName() {
	case config.DriverPostgres:
		return openPostgres(ctx, sc.DSN, log)
	default:
		path := filepath.Join(dir, StoreName)
		st, err := boltstore.Open(path, &bolt.Options{Timeout: 2 * time.Second})
		if err != nil {
			return nil, fmt.Errorf("server: opening the store %s: %w (is another hearth serving this dir?)", path, err)
		}
		return st, nil
	}
}
