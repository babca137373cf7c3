package pgnosql

import (
	"fmt"

	smalldb "github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql/database"
)

// authTables are the tables smallstep's db.New creates for the authority
// (certificates v0.30.2, db/db.go). TestAuthDBTablesMatchSmallstep compares
// them with the buckets smallstep's own bbolt database gets, so an upgrade
// that adds one fails a test instead of a request.
var authTables = []string{
	"revoked_x509_certs", "x509_certs", "used_ott",
	"ssh_certs", "ssh_hosts", "ssh_host_principals", "ssh_users",
	"revoked_ssh_certs", "x509_certs_data", "x509_crl",
}

// NewAuthDB creates smallstep's authority tables in db (a *DB, or any
// nosql database) and returns smallstep's AuthDB over it, for
// authority.WithDatabase (and for acme/db/nosql.New, which creates its own
// tables). The returned DB's Shutdown does not close db: the caller does.
func NewAuthDB(db database.DB) (*smalldb.DB, error) {
	for _, t := range authTables {
		if err := db.CreateTable([]byte(t)); err != nil {
			return nil, fmt.Errorf("pgnosql: authority tables: %w", err)
		}
	}
	return &smalldb.DB{DB: db}, nil
}
