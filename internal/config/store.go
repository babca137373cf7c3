package config

import (
	"fmt"

	"github.com/hearth-home/hearth/internal/store/pgstore"
)

// The store drivers hearth.yaml's store.driver names.
const (
	// DriverBolt is the embedded store, the data dir's hearth.db (one
	// process).
	DriverBolt = "bbolt"
	// DriverPostgres is PostgreSQL, shared by every replica.
	DriverPostgres = "postgres"
)

// Store is hearth.yaml's store section: where hearth keeps its state.
//
//	store:
//	  driver: postgres
//	  dsn: "host=db.home.arpa user=hearth dbname=hearth passfile=/etc/hearth/pgpass sslmode=verify-full"
//
// The zero value is the embedded bbolt store. `hearth serve --store-dsn`
// overrides it (and implies postgres).
type Store struct {
	// Driver is "bbolt" (default) or "postgres".
	Driver string `yaml:"driver,omitempty"`
	// DSN is the PostgreSQL connection string (a postgres:// URL or
	// keyword=value pairs). It must not hold a password: name a file
	// readable only by hearth, in libpq's .pgpass format, with passfile=.
	DSN string `yaml:"dsn,omitempty"`
}

// DriverName is the driver in use: Driver, or bbolt when empty.
func (s Store) DriverName() string {
	if s.Driver == "" {
		return DriverBolt
	}
	return s.Driver
}

// Validate checks the section: a known driver, a DSN exactly when the
// driver is postgres, and a DSN that carries no password and whose
// passfile only its owner can read (pgstore.CheckDSN).
func (s Store) Validate() error {
	switch s.DriverName() {
	case DriverBolt:
		if s.DSN != "" {
			return fmt.Errorf("config: store.dsn is set but store.driver is bbolt; set store.driver: postgres, or remove the dsn")
		}
		return nil
	case DriverPostgres:
		if s.DSN == "" {
			return fmt.Errorf("config: store.driver is postgres but store.dsn is empty; give the database, e.g. dsn: \"host=db user=hearth dbname=hearth passfile=/etc/hearth/pgpass\" (or hearth serve --store-dsn)")
		}
		if err := pgstore.CheckDSN(s.DSN); err != nil {
			return fmt.Errorf("config: store.dsn: %w (the password goes in a passfile= file of mode 0600, never in hearth.yaml or on the command line)", err)
		}
		return nil
	default:
		return fmt.Errorf("config: store.driver %q is unknown; use bbolt (embedded, the default) or postgres", s.Driver)
	}
}
