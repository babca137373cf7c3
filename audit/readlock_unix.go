//go:build unix

package audit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// lockShared takes a shared, non-blocking flock on the lock file at path.
func lockShared(path string) (io.Closer, error) {
	return flockFile(path, os.O_RDONLY, syscall.LOCK_SH, ErrWriterRunning)
}

// flockFile opens path with flag and takes a non-blocking flock of kind
// how (LOCK_EX or LOCK_SH) on it; busy is the error when another process
// holds a conflicting lock.
func flockFile(path string, flag, how int, busy error) (*os.File, error) {
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, busy
		}
		return nil, fmt.Errorf("audit: locking %s: %w", path, err)
	}
	return f, nil
}
