package audit

import (
	"errors"
	"fmt"

	"github.com/hearth-home/hearth/internal/httpx"
	"golang.org/x/mod/sumdb/tlog"
)

// maxProofLen bounds a proof's hashes: an RFC 6962 proof in a tree of at
// most 2^63 leaves has fewer than 2*63.
const maxProofLen = 128

// InclusionProof proves that the tree of Size entries holds entry Index
// (RFC 6962 section 2.1.1, "Merkle audit path"). Its JSON form, served at
// /.hearth/v1/audit/proof?index=N&size=M, has the hashes in base64.
type InclusionProof struct {
	Index int64            `json:"index"`
	Size  int64            `json:"size"`
	Proof tlog.RecordProof `json:"proof"`
}

// ConsistencyProof proves that the tree of Size entries extends the tree of
// Old entries (RFC 6962 section 2.1.2). Its JSON form is served at
// /.hearth/v1/audit/proof?old=N&size=M.
type ConsistencyProof struct {
	Old   int64          `json:"old"`
	Size  int64          `json:"size"`
	Proof tlog.TreeProof `json:"proof"`
}

// ErrProof is wrapped by the errors of CheckInclusion and CheckConsistency
// for a proof that does not prove what it claims.
var ErrProof = errors.New("audit: proof does not verify")

// ProveInclusion returns the proof that the tree of size entries holds
// entry index; 0 <= index < size <= Size().
func (l *Log) ProveInclusion(index, size int64) (*InclusionProof, error) {
	if size < 1 || size > l.Size() || index < 0 || index >= size {
		return nil, fmt.Errorf("audit: no inclusion proof for entry %d in a tree of %d (the log has %d)", index, size, l.Size())
	}
	p, err := tlog.ProveRecord(size, index, hashFile{l.hashes})
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &InclusionProof{Index: index, Size: size, Proof: nonNil(p)}, nil
}

// ProveConsistency returns the proof that the tree of size entries extends
// the tree of old entries; 1 <= old <= size <= Size().
func (l *Log) ProveConsistency(old, size int64) (*ConsistencyProof, error) {
	if old < 1 || old > size || size > l.Size() {
		return nil, fmt.Errorf("audit: no consistency proof from %d to %d (the log has %d)", old, size, l.Size())
	}
	p, err := tlog.ProveTree(size, old, hashFile{l.hashes})
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &ConsistencyProof{Old: old, Size: size, Proof: nonNil(p)}, nil
}

func nonNil[T ~[]tlog.Hash](p T) T {
	if p == nil {
		return T{}
	}
	return p
}

// CheckInclusion checks, on the client side, that p proves that entry (the
// entry's line, without newline) is entry p.Index of the tree that the
// checkpoint c signs. Check c's signature first (OpenCheckpoint).
func CheckInclusion(p *InclusionProof, entry []byte, c Checkpoint) error {
	if p == nil || p.Size != c.Size {
		return fmt.Errorf("%w: proof is not for the checkpoint's size", ErrProof)
	}
	if err := tlog.CheckRecord(p.Proof, c.Size, c.Hash, p.Index, tlog.RecordHash(entry)); err != nil {
		return fmt.Errorf("%w: %v", ErrProof, err)
	}
	return nil
}

// CheckConsistency checks, on the client side, that p proves that the tree
// of checkpoint c extends the tree of checkpoint old: that the log only
// grew between them. Check both signatures first (OpenCheckpoint).
func CheckConsistency(p *ConsistencyProof, old, c Checkpoint) error {
	if old.Origin != c.Origin {
		return fmt.Errorf("%w: checkpoints of different logs", ErrProof)
	}
	if old.Size > c.Size {
		return fmt.Errorf("%w: the old checkpoint is larger (%d > %d): the log was truncated", ErrProof, old.Size, c.Size)
	}
	if old.Size == 0 {
		return nil
	}
	if old.Size == c.Size {
		if old.Hash != c.Hash {
			return fmt.Errorf("%w: two different trees of size %d", ErrProof, c.Size)
		}
		return nil
	}
	if p == nil || p.Old != old.Size || p.Size != c.Size {
		return fmt.Errorf("%w: proof is not for these checkpoints' sizes", ErrProof)
	}
	if err := tlog.CheckTree(p.Proof, c.Size, c.Hash, old.Size, old.Hash); err != nil {
		return fmt.Errorf("%w: %v", ErrProof, err)
	}
	return nil
}

// ParseInclusionProof decodes the JSON of an inclusion proof strictly.
func ParseInclusionProof(b []byte) (*InclusionProof, error) {
	var p InclusionProof
	if len(b) > maxProofJSON {
		return nil, errors.New("audit: proof: too large")
	}
	if err := httpx.DecodeStrict(b, &p); err != nil {
		return nil, fmt.Errorf("audit: inclusion proof: %w", err)
	}
	if p.Index < 0 || p.Size < 1 || p.Index >= p.Size || len(p.Proof) > maxProofLen {
		return nil, errors.New("audit: inclusion proof: index, size or length out of range")
	}
	return &p, nil
}

// maxProofJSON bounds a proof's JSON, which comes from a server the client
// does not trust yet.
const maxProofJSON = 64 << 10

// ParseConsistencyProof decodes the JSON of a consistency proof strictly.
func ParseConsistencyProof(b []byte) (*ConsistencyProof, error) {
	var p ConsistencyProof
	if len(b) > maxProofJSON {
		return nil, errors.New("audit: proof: too large")
	}
	if err := httpx.DecodeStrict(b, &p); err != nil {
		return nil, fmt.Errorf("audit: consistency proof: %w", err)
	}
	if p.Old < 1 || p.Old > p.Size || len(p.Proof) > maxProofLen {
		return nil, errors.New("audit: consistency proof: sizes or length out of range")
	}
	return &p, nil
}
