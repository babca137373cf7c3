//go:build !unix

package audit

import (
	"fmt"
	"io"
	"os"
)

// lockShared opens the lock file; without flock, a writer is not detected
// on this platform.
func lockShared(path string) (io.Closer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return f, nil
}
