package webui

import (
	"context"

	"github.com/hearth-home/hearth/audit"
)

// LogStatus is the AuditStatus of a running log: Verify recomputes the
// tree from the files in Dir and checks every checkpoint against the log's
// own verifier key (as `hearth audit verify --witness`-less runs do), and
// Checkpoint is the latest signed checkpoint.
type LogStatus struct {
	Dir string
	Log *audit.Log
}

// Verify runs audit.Verify on Dir.
func (s LogStatus) Verify(context.Context) (*audit.VerifyResult, error) {
	return audit.Verify(s.Dir, audit.VerifyOptions{VerifierKey: s.Log.VerifierKey()})
}

// Checkpoint returns the latest signed checkpoint note.
func (s LogStatus) Checkpoint() []byte {
	_, b := s.Log.Checkpoint()
	return b
}
