-- The audit history of hearth replicas (internal/pgaudit), in its own
-- schema hearth_audit.
--
-- Replicas insert entries (seq NULL) in batches, or in the transaction of
-- the change they record (AppendTx); the one sequencer (advisory lock,
-- fenced by epoch) gives them seq in batches, extends the Merkle tree
-- (hashes) and stores a signed checkpoint, all in one transaction; a
-- request answers once a checkpoint covers its entry. body is the event's
-- JSON without its index: the entry line, whose tlog.RecordHash is the
-- leaf, is {"index":seq, then body after its '{' (audit.EntryLine).
CREATE TABLE entries (
	id     bigserial PRIMARY KEY,
	seq    bigint UNIQUE CHECK (seq >= 0),
	body   bytea NOT NULL,
	queued timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entries_pending ON entries (id) WHERE seq IS NULL;

-- One row per batch: the signed note (c2sp.org/tlog-checkpoint text,
-- c2sp.org/signed-note signature), as the file log writes it.
CREATE TABLE checkpoints (
	size    bigint PRIMARY KEY CHECK (size > 0),
	note    bytea NOT NULL,
	epoch   bigint NOT NULL,
	made_at timestamptz NOT NULL DEFAULT now()
);

-- The tree's stored hashes, golang.org/x/mod/sumdb/tlog numbering
-- (StoredHashIndex), written in the batch that sequences their entries.
CREATE TABLE hashes (
	idx  bigint PRIMARY KEY CHECK (idx >= 0),
	hash bytea NOT NULL CHECK (octet_length(hash) = 32)
);

-- The fencing row: a new sequencer increments epoch when it takes the
-- lock; every batch locks this row, checks the epoch is its own and
-- advances size WHERE epoch = its own AND size = the old size, so a stale
-- sequencer appends nothing. origin and verifier_key bind the database to
-- one log: a replica with other audit keys is refused.
CREATE TABLE state (
	singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	epoch        bigint NOT NULL DEFAULT 0,
	size         bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
	holder       text NOT NULL DEFAULT '',
	origin       text,
	verifier_key text
);
INSERT INTO state DEFAULT VALUES;
