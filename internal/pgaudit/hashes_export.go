package pgaudit

import (
	"context"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"
)

// ReadHashes reads the tree's stored hashes at idx (tlog numbering)
// through q (a pool, a connection or a transaction), in the order asked: a
// tlog.HashReader for code that checks the stored tree, such as hearth
// migrate before it commits an imported history.
func ReadHashes(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, idx []int64) ([]tlog.Hash, error) {
	return readHashes(ctx, q, idx)
}
