-- The audit Merkle tree's stored hashes (golang.org/x/mod/sumdb/tlog's
-- numbering: StoredHashIndex), written by the sequencer in the batch that
-- sequences their entries, so proofs and tree hashes are read, not
-- recomputed from every entry.
CREATE TABLE audit_hashes (
	idx  bigint PRIMARY KEY CHECK (idx >= 0),
	hash bytea NOT NULL CHECK (octet_length(hash) = 32)
);
