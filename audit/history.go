package audit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// This file is what a copy of the log to another home (hearth migrate, to
// PostgreSQL) needs: a shared lock that keeps writers out while it reads,
// and the verified history streamed entry by entry with its signed
// checkpoints.

// ErrWriterRunning is returned by LockShared when a process has the log
// open for writing (a running `hearth serve`).
var ErrWriterRunning = errors.New("audit: the log is open for writing by another process")

// LockShared takes a shared lock on the log in <dir>/audit, so that no
// process opens it for writing (Open takes the lock exclusively and fails
// with ErrLocked) until the returned Closer is closed. It fails with
// ErrWriterRunning when a process has the log open now. Readers holding
// it do not exclude each other, and Verify still sees no writer.
func LockShared(dir string) (io.Closer, error) {
	path := filepath.Join(dir, DirName, LockFile)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("audit: no audit log lock file in %s: %w", filepath.Join(dir, DirName), err)
	}
	return lockShared(path)
}

// WalkHistory verifies the log in <dir>/audit (Verify with opts) and, if
// it verifies, reads it again: entry gets every entry the final checkpoint
// covers, in order, with its index and its line (the bytes whose
// tlog.RecordHash is its leaf); checkpoint gets every signed checkpoint of
// the framed segments, in order, right after the last entry it covers,
// parsed and as the signed note the log holds. Entries past the final
// checkpoint (a batch a crash left unacknowledged) are not passed: they
// were never acknowledged and the next Open discards them. Checkpoints in
// the legacy form (logs written before the framed segments) are not passed
// either (the first framed checkpoint covers their entries too), nor the
// checkpoint of the empty tree.
//
// The log must not change between the two reads: take LockShared first.
// An error from entry or checkpoint stops the walk and is returned.
func WalkHistory(dir string, opts VerifyOptions, entry func(index int64, line []byte) error, checkpoint func(c Checkpoint, msg []byte) error) (*VerifyResult, error) {
	res, err := Verify(dir, opts)
	if err != nil {
		return res, err
	}
	v := &verifier{adir: filepath.Join(dir, DirName), res: &VerifyResult{}, hashDiverged: -1, hashesEnd: -1}
	end := res.Entries
	var seen int64
	_, _, err = v.scan(func(i int64, line []byte) error {
		if i >= end {
			return nil
		}
		seen = i + 1
		return entry(i, line)
	}, func(n int64, msg []byte) error {
		c, err := ParseCheckpoint(noteText(msg))
		if err != nil {
			return fmt.Errorf("audit: checkpoint after entry %d: %w", n, err)
		}
		if c.Size > end || c.Size == 0 {
			return nil
		}
		return checkpoint(c, msg)
	})
	if err != nil {
		return res, err
	}
	if seen != end {
		return res, fmt.Errorf("audit: the log changed while it was read: %d entries verified, %d read", end, seen)
	}
	return res, nil
}
