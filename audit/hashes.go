package audit

import (
	"fmt"
	"io"

	"golang.org/x/mod/sumdb/tlog"
)

// hashFile reads stored hashes from the hashes file: hash i is at offset
// 32*i. It is a tlog.HashReader.
type hashFile struct{ r io.ReaderAt }

func (h hashFile) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if _, err := h.r.ReadAt(out[i][:], x*tlog.HashSize); err != nil {
			return nil, fmt.Errorf("audit: reading stored hash %d: %w", x, err)
		}
	}
	return out, nil
}

// hashStore is the writer's view of the stored hashes: those durable in
// the file, then those of the batch being built (pending), which become
// durable together with the batch. Adding a record or computing the tree
// hash needs only the tree's frontier, which it keeps in memory, so the
// writer never reads the file.
type hashStore struct {
	base      int64 // stored hashes in the file
	pending   []tlog.Hash
	front     frontier // of the committed records
	pendFront frontier // of the committed and pending records
}

// newHashStore starts a store over a file holding the stored hashes of
// records records, reading the frontier from it.
func newHashStore(file io.ReaderAt, records int64) (*hashStore, error) {
	h := &hashStore{base: tlog.StoredHashCount(records)}
	h.front.n = records
	for l := 0; l < 63; l++ {
		if records>>l&1 == 0 {
			continue
		}
		if _, err := file.ReadAt(h.front.level[l][:], tlog.StoredHashIndex(l, records>>l-1)*tlog.HashSize); err != nil {
			return nil, fmt.Errorf("audit: reading the tree's frontier: %w", err)
		}
	}
	h.pendFront = h.front
	return h, nil
}

// ReadHashes serves tlog.TreeHash for the committed and pending records.
func (h *hashStore) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	return h.pendFront.ReadHashes(indexes)
}

// records is the number of committed and pending records.
func (h *hashStore) records() int64 { return h.pendFront.n }

// add computes the stored hashes of the next record, whose leaf is data.
func (h *hashStore) add(data []byte) error {
	h.pending = h.pendFront.appendAdd(h.pending, tlog.RecordHash(data))
	return nil
}

// appendPending appends the pending hashes as they are stored in the file.
func (h *hashStore) appendPending(dst []byte) []byte {
	for _, x := range h.pending {
		dst = append(dst, x[:]...)
	}
	return dst
}

func (h *hashStore) commit() {
	h.base += int64(len(h.pending))
	h.front = h.pendFront
	h.pending = h.pending[:0]
}

func (h *hashStore) rollback() {
	h.pending = h.pending[:0]
	h.pendFront = h.front
}

// frontier holds only the hashes of the perfect subtrees that make up a
// tree of n records (at most one per level): all that tlog needs to add a
// record (StoredHashes) or to compute the tree hash (TreeHash). Verify
// streams through the log with it in constant memory.
type frontier struct {
	n     int64
	level [64]tlog.Hash
}

func (f *frontier) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		l, k := tlog.SplitStoredHashIndex(x)
		if f.n>>l&1 == 0 || k != f.n>>l-1 {
			return nil, fmt.Errorf("audit: stored hash %d is not on the frontier of %d records", x, f.n)
		}
		out[i] = f.level[l]
	}
	return out, nil
}

// add appends a record with leaf hash h and returns its stored hashes
// (those tlog.StoredHashesForRecordHash returns).
func (f *frontier) add(h tlog.Hash) ([]tlog.Hash, error) {
	return f.appendAdd(nil, h), nil
}

// appendAdd appends a record with leaf hash h and its stored hashes to
// dst, without allocating when dst has room: the leaf's hash, then one
// interior node per level where the record completes a perfect subtree
// (RFC 6962 section 2.1; the order of tlog's stored hashes), each the
// node hash of the frontier's subtree on its left and the one below.
func (f *frontier) appendAdd(dst []tlog.Hash, h tlog.Hash) []tlog.Hash {
	dst = append(dst, h)
	l := 0
	for ; f.n>>l&1 == 1; l++ {
		h = tlog.NodeHash(f.level[l], h)
		dst = append(dst, h)
	}
	f.level[l] = h
	f.n++
	return dst
}

func (f *frontier) root() (tlog.Hash, error) { return tlog.TreeHash(f.n, f) }
