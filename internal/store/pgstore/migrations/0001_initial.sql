-- hearth's own tables on PostgreSQL (schema "hearth"; smallstep's tables
-- live in "hearth_ca", see internal/pgnosql). The shape follows
-- internal/store/store.go. Run by internal/pgmigrate with search_path set
-- to the schema, in one transaction. Never edit once released: add 0002.

-- Users and what authenticates them. Secrets only as hashes, except the
-- TOTP seed, which verification needs.
CREATE TABLE users (
	name             text PRIMARY KEY CHECK (name = lower(name) AND length(name) BETWEEN 1 AND 64),
	granted          text[] NOT NULL DEFAULT '{}',
	password_hash    text NOT NULL DEFAULT '',
	password_changed timestamptz,
	disabled         boolean NOT NULL DEFAULT false,
	created          timestamptz NOT NULL,
	totp_secret      text NOT NULL DEFAULT '',
	totp_pending     text NOT NULL DEFAULT '',
	totp_last_step   bigint NOT NULL DEFAULT 0,
	version          bigint NOT NULL DEFAULT 1
);

-- OIDC links: an (issuer, subject) belongs to at most one user.
CREATE TABLE identities (
	issuer    text NOT NULL,
	subject   text NOT NULL,
	user_name text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
	PRIMARY KEY (issuer, subject)
);
CREATE INDEX identities_user ON identities (user_name);

-- Unused recovery codes (argon2id PHC under a public locator); consumed
-- with DELETE … RETURNING, so of concurrent uses exactly one succeeds.
CREATE TABLE recovery_codes (
	user_name text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
	locator   text NOT NULL,
	hash      text NOT NULL,
	PRIMARY KEY (user_name, locator)
);

-- One admin-issued reset code per user (SHA-256 of 160 random bits).
CREATE TABLE reset_codes (
	user_name text PRIMARY KEY REFERENCES users (name) ON DELETE CASCADE,
	hash      bytea NOT NULL CHECK (octet_length(hash) = 32),
	expires   timestamptz NOT NULL
);

-- Tokens by SHA-256 of their text.
CREATE TABLE access_tokens (
	hash      bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
	user_name text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
	family    text NOT NULL,
	caps      text[] NOT NULL,
	auth_time timestamptz NOT NULL,
	expires   timestamptz NOT NULL,
	last_used timestamptz NOT NULL,
	mfa       boolean NOT NULL DEFAULT false,
	method    text NOT NULL
);
CREATE INDEX access_tokens_user ON access_tokens (user_name);
CREATE INDEX access_tokens_family ON access_tokens (family);

-- Refresh tokens: single use by UPDATE … SET used_at = now() WHERE used_at
-- IS NULL … RETURNING; a used one is kept until it expires so that reuse
-- is recognised (RFC 9700 §4.14.2).
CREATE TABLE refresh_tokens (
	hash      bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
	user_name text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
	family    text NOT NULL,
	caps      text[] NOT NULL,
	auth_time timestamptz NOT NULL,
	expires   timestamptz NOT NULL,
	used_at   timestamptz,
	mfa       boolean NOT NULL DEFAULT false,
	method    text NOT NULL
);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_name);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

-- Throttling state per kind and name as typed, user or not (so that
-- unknown names answer alike); charged with one upsert before the secret
-- is checked. Rows of non-users are pruned after a day without failure.
CREATE TABLE lockouts (
	kind         text NOT NULL CHECK (kind IN ('login', 'recover')),
	name         text NOT NULL,
	failures     integer NOT NULL DEFAULT 0,
	locked_until timestamptz,
	disabled     boolean NOT NULL DEFAULT false,
	last_failure timestamptz,
	PRIMARY KEY (kind, name)
);
CREATE INDEX lockouts_last_failure ON lockouts (last_failure);

-- Devices; the enrollment token's jti is single use by UPDATE … SET
-- token_used_at WHERE token_id = $jti AND token_used_at IS NULL.
CREATE TABLE devices (
	name          text PRIMARY KEY,
	granted       text[] NOT NULL DEFAULT '{}',
	caps          text[] NOT NULL DEFAULT '{}',
	lifetime_ns   bigint NOT NULL CHECK (lifetime_ns > 0),
	created_at    timestamptz NOT NULL,
	incarnation   text NOT NULL UNIQUE,
	token_id      text NOT NULL DEFAULT '',
	token_expires timestamptz,
	token_used_at timestamptz,
	revoked       boolean NOT NULL DEFAULT false,
	revoked_at    timestamptz,
	version       bigint NOT NULL DEFAULT 1
);

-- The certificate index of device incarnations (written in the same
-- transaction as smallstep's x509_certs row for the certificate).
CREATE TABLE device_certs (
	incarnation text NOT NULL,
	serial      text NOT NULL,
	sha256      bytea NOT NULL UNIQUE CHECK (octet_length(sha256) = 32),
	not_after   timestamptz NOT NULL,
	revoked     boolean NOT NULL DEFAULT false,
	issued_at   timestamptz NOT NULL,
	PRIMARY KEY (incarnation, serial)
);

-- The invalidation feed: one row per Tx.Invalidate, written in the
-- change's transaction (NOTIFY hearth_changes on commit). Readers resync
-- by transaction id, not by id: a bigserial can commit out of order, a
-- cursor at pg_snapshot_xmin of the reader's snapshot cannot skip a
-- committed row (rows seen twice are harmless: invalidation is idempotent).
CREATE TABLE changes (
	id      bigserial PRIMARY KEY,
	xid     xid8 NOT NULL DEFAULT pg_current_xact_id(),
	at      timestamptz NOT NULL DEFAULT now(),
	kind    text NOT NULL,
	key     text NOT NULL DEFAULT '',
	hashes  bytea[] NOT NULL DEFAULT '{}'
);
CREATE INDEX changes_xid ON changes (xid);

-- The audit history. Requests insert entries (seq NULL) in the
-- transaction of the change they record; the one sequencer (advisory lock,
-- fenced by epoch) gives them seq in batches, extends the Merkle tree and
-- stores a signed checkpoint; a request answers once a checkpoint covers
-- its entry.
CREATE TABLE audit_entries (
	id       bigserial PRIMARY KEY,
	seq      bigint UNIQUE CHECK (seq >= 0),
	body     bytea NOT NULL,
	queued   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_entries_pending ON audit_entries (id) WHERE seq IS NULL;

CREATE TABLE audit_checkpoints (
	size    bigint PRIMARY KEY CHECK (size >= 0),
	root    bytea NOT NULL CHECK (octet_length(root) = 32),
	note    text NOT NULL,
	epoch   bigint NOT NULL,
	made_at timestamptz NOT NULL DEFAULT now()
);

-- The sequencer's fencing row: a new sequencer increments epoch when it
-- takes the lock; every batch updates this row WHERE epoch = its own, so a
-- stale sequencer's batch affects no row and rolls back.
CREATE TABLE audit_sequencer (
	singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	epoch     bigint NOT NULL DEFAULT 0,
	size      bigint NOT NULL DEFAULT 0,
	holder    text NOT NULL DEFAULT ''
);
INSERT INTO audit_sequencer DEFAULT VALUES;
