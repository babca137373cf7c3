package pgaudit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/hearth-home/hearth/audit"
)

// runWitnesses pushes the latest stored checkpoint to the witnesses while
// this replica is the sequencer: one pusher at a time, like one writer.
// A replica that takes over starts from the size its own kept cosignature
// says; a witness that has seen more answers 409 with its size and the
// push goes on from there (c2sp.org/tlog-witness).
func (l *Log) runWitnesses() {
	defer l.wg.Done()
	every := l.opts.WitnessInterval
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		if !l.seq.Active() {
			continue
		}
		cp, msg, err := l.Latest(l.ctx)
		if err != nil || cp.Size == 0 {
			continue
		}
		for _, ev := range l.wpush.Push(l.ctx, cp, msg) {
			if err := l.Record(l.ctx, ev); err != nil {
				l.log.Error().Err(err).Msg("pgaudit: recording a witness's refusal")
			}
		}
	}
}

// Latest returns the latest stored checkpoint and its signed note (size 0
// and no note for an empty history), checked against the log's key.
func (l *Log) Latest(ctx context.Context) (audit.Checkpoint, []byte, error) {
	var msg []byte
	err := l.pool.QueryRow(ctx, "SELECT note FROM "+Schema+".checkpoints ORDER BY size DESC LIMIT 1").Scan(&msg)
	if errors.Is(err, pgx.ErrNoRows) {
		return audit.Checkpoint{Origin: l.Origin()}, nil, nil
	}
	if err != nil {
		return audit.Checkpoint{}, nil, fmt.Errorf("pgaudit: %w", err)
	}
	c, err := audit.OpenCheckpoint(msg, noteVerifiers(l.signer))
	if err != nil {
		return audit.Checkpoint{}, nil, err
	}
	return c, msg, nil
}

// Witnesses returns what this replica knows of each witness (nil without
// witnesses or when it runs no sequencer).
func (l *Log) Witnesses(ctx context.Context) []audit.WitnessStatus {
	if l.wpush == nil {
		return nil
	}
	c, _, _ := l.Latest(ctx)
	return l.wpush.Status(c.Size)
}

// ProveConsistency proves, from the stored hashes, that the tree of size
// entries extends the tree of old entries (RFC 6962 section 2.1.2).
func (l *Log) ProveConsistency(old, size int64) (*audit.ConsistencyProof, error) {
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	defer cancel()
	cur, err := l.treeSize(ctx)
	if err != nil {
		return nil, err
	}
	if old < 1 || old > size || size > cur {
		return nil, fmt.Errorf("pgaudit: no consistency proof from %d to %d (the log has %d)", old, size, cur)
	}
	p, err := tlog.ProveTree(size, old, l.hashReader(ctx))
	if err != nil {
		return nil, fmt.Errorf("pgaudit: %w", err)
	}
	if p == nil {
		p = tlog.TreeProof{}
	}
	return &audit.ConsistencyProof{Old: old, Size: size, Proof: p}, nil
}
