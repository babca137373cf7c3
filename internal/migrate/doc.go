// Package migrate moves an embedded hearth installation (a data dir:
// hearth.db, the CA's smallstep database ca/db and the audit log in
// audit/) to PostgreSQL, for replicas:
//
//   - hearth.db, bucket by bucket through the store seam (boltstore, read
//     only, to pgstore): every bucket the file has, so that a bucket added
//     by a later version is not forgotten;
//   - ca/db, table by table, into internal/pgnosql (schema hearth_ca);
//   - the audit log, entry by entry with its signed checkpoints, into the
//     PostgreSQL history of internal/pgaudit (schema hearth_audit), each
//     entry at its own index, so that verifiers and witnesses see one
//     history: same origin, same tree, same checkpoints, no gap.
//
// # Safety
//
// The source is only read, and only while nothing serves it: the audit
// log's lock file is taken shared and both bbolt files are opened read only
// (a shared flock), with a short timeout; `hearth serve` takes them
// exclusively, so a running server makes the migration refuse (ErrServed)
// and a server started during it cannot open the data dir.
//
// The target must hold no hearth data (ErrNotEmpty): the migration never
// merges two installations. One session advisory lock on the target keeps
// two migrations from writing into it at once.
//
// Every area is copied in one transaction and counted on both sides (the
// number of records of every bucket and a SHA-256 digest of them): the
// store and the audit history are compared inside their transaction, so a
// difference rolls them back; the CA database is compared after its
// transaction and emptied again on a difference. When a later area fails,
// the earlier ones are emptied again, so a failed migration leaves the
// target as it found it, except when the process itself dies in between:
// then the next run refuses the target and says how to start over.
package migrate

import "errors"

// Errors callers branch on.
var (
	// ErrServed: a process has the data dir open (stop `hearth serve`).
	ErrServed = errors.New("migrate: the data dir is in use")
	// ErrNotEmpty: the target database already holds hearth data.
	ErrNotEmpty = errors.New("migrate: the target database already holds hearth data")
	// ErrMismatch: the copy differs from the source (nothing of it is
	// kept).
	ErrMismatch = errors.New("migrate: the copy differs from the source")
)
