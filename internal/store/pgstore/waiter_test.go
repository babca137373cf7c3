package pgstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Requests on a replica wait through one AuditWaiter: each is woken with
// its entry's position once a checkpoint covers it, also after the
// waiter's listening connection has been killed, and the history verifies.
func TestAuditWaiter(t *testing.T) {
	const writers, each = 8, 30
	db, poolA := migrated(t)
	poolB := db.Pool(t)
	signer := newTestSigner(t)
	runSequencer(t, &Sequencer{Pool: poolA, Sign: signer.sign, Name: "a"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w, err := NewAuditWaiter(ctx, poolB, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	positions := map[int64]bool{}
	write := func(round int) {
		writeAndWait(t, []*pgxpool.Pool{poolB}, writers, each, fmt.Sprintf("round %d ", round), positions, func(_ *pgxpool.Pool, id int64) (int64, error) {
			return w.Wait(ctx, id)
		})
	}
	write(0)
	var killed int
	if err := db.Admin(t).QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
		WaiterApplicationName, db.Name).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d waiter connections (%v), want 1", killed, err)
	}
	write(1)
	verifyHistory(t, poolA, signer, 2*writers*each)
}
