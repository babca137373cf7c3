//go:build unix

package audit

import (
	"errors"
	"os"
	"syscall"
)

// lockLog takes the exclusive lock that marks the log as open by a writer.
func lockLog(path string) (*os.File, error) {
	return flockFile(path, os.O_RDWR|os.O_CREATE, syscall.LOCK_EX, ErrLocked)
}

// writerRunning reports whether a process has the log open for writing.
func writerRunning(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
