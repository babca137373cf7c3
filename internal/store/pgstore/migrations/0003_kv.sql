-- hearth's records as buckets of byte keys and values (internal/store's
-- shape, the same buckets and records as bbolt's hearth.db), replacing the
-- typed tables of 0001, which no installation ever used (nothing wrote
-- them). The audit tables of 0001/0002 stay.
DROP TABLE identities, recovery_codes, reset_codes, access_tokens, refresh_tokens,
	lockouts, device_certs, devices, users, changes;

-- Declared buckets (Store.Declare). Names are never removed, so a replica
-- may cache the ones it has seen.
CREATE TABLE buckets (
	name text PRIMARY KEY CHECK (octet_length(name) BETWEEN 1 AND 255)
);

-- Records. bytea compares as unsigned bytes (memcmp), so ORDER BY key is
-- bbolt's key order. The bounds are the store's (store.MaxKeySize, 1 KiB,
-- fits a btree entry; store.MaxValueSize, 1 MiB).
CREATE TABLE kv (
	bucket text NOT NULL,
	key    bytea NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 1024),
	value  bytea NOT NULL CHECK (octet_length(value) <= 1048576),
	PRIMARY KEY (bucket, key)
);

-- The feed: one row per record a transaction put or deleted, written in
-- that transaction (NOTIFY hearth_changes on commit). Readers resync by
-- transaction id, not by id: a bigserial can commit out of order, a cursor
-- at pg_snapshot_xmin of the reader's snapshot cannot skip a committed row
-- (a row seen twice is harmless: reloading a record is idempotent).
CREATE TABLE changes (
	id     bigserial PRIMARY KEY,
	xid    xid8 NOT NULL DEFAULT pg_current_xact_id(),
	at     timestamptz NOT NULL DEFAULT now(),
	bucket text NOT NULL,
	key    bytea NOT NULL
);
CREATE INDEX changes_xid ON changes (xid);
CREATE INDEX changes_at ON changes (at);
