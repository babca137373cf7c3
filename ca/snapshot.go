package ca

import (
	"reflect"
	"unsafe"

	nosqlbolt "github.com/smallstep/nosql/bolt"
	"go.etcd.io/bbolt"
)

// DatabaseName is the CA database's path inside the data dir (smallstep's
// nosql bbolt file), for backups.
const DatabaseName = dirName + "/" + smallstepDBFile

// Database returns the open bbolt handle of the CA's own database, so that
// a backup can copy it inside a read transaction (bbolt Tx.WriteTo) while
// the CA keeps writing; nil if the handle cannot be found.
//
// Backups of this kind are for the bbolt file only: when the CA database
// is another one (Options.CADB, e.g. PostgreSQL through internal/pgnosql),
// Database returns nil, and that database is backed up with its own tools
// (pg_dump), not by hearth's backup.
//
// smallstep's nosql bbolt driver keeps its *bbolt.DB in an unexported
// field and offers no snapshot, and bbolt's exclusive file lock keeps a
// second handle from opening the file while the CA has it. So the handle
// is read from that field, checked by type: if a later nosql release
// renames or retypes it, Database returns nil (and TestDatabaseHandle
// fails) rather than anything unsafe.
func (c *CA) Database() *bbolt.DB {
	if c.sdb == nil || c.sdb.DB == nil {
		return nil
	}
	drv, ok := c.sdb.DB.DB.(*nosqlbolt.DB)
	if !ok || drv == nil {
		return nil
	}
	f := reflect.ValueOf(drv).Elem().FieldByName("db")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*bbolt.DB]() {
		return nil
	}
	return *(**bbolt.DB)(unsafe.Pointer(f.UnsafeAddr()))
}
