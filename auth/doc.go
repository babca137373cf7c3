// Package auth turns credentials into principals and tokens: users and their
// argon2id password hashes, TOTP second factors, recovery and reset codes,
// short-lived bearer tokens with rotating refresh tokens, and the throttling
// and lockout that keep password guessing slow.
//
// # Trust boundary
//
// Everything a client sends to [Service.Handler] is untrusted: bodies are
// bounded, names and codes are checked for shape before use, and every
// credential check answers the same way whether the user exists or not.
// [Service.AdminHandler] trusts its caller to have been authorized
// (hearth:admin through the gateway, or the local admin socket); it never
// lets an admin choose or learn a user's password (OWASP ASVS 5.0 V6.4.6).
// The store (store.Store: the data dir's hearth.db, mode 0600, or the
// PostgreSQL database replicas share) is trusted; it holds argon2id
// hashes, SHA-256 hashes of tokens and reset codes, the TOTP seeds that
// verification needs, and the key that seals passkey ceremonies.
//
// # Replicas
//
// Every decision that must hold across replicas is a read-check-write in
// one store transaction: a refresh token consumed once and its reuse
// revoking the family (RFC 9700 §4.14.2), a recovery or reset code spent
// once, a TOTP step accepted once (RFC 6238 §5.2), a passkey ceremony
// finished once, a login charged to the lockout before its password is
// checked (NIST SP 800-63B-4 §3.2.2). On bbolt one writer at a time makes
// these atomic; on PostgreSQL SERIALIZABLE isolation makes concurrent
// transactions equal to some serial order (PostgreSQL 15 manual §13.2.3)
// and the driver reruns one that conflicts, so the same code is correct on
// one replica or many. Audit entries and in-memory index changes happen
// once, in the transaction's BeforeCommit hook.
//
// The token index is per replica. It follows the store's feed of changes
// (a token or user another replica changed is reloaded; a resync reloads
// all), so a logout, revocation, password change or disable on one
// replica holds on the others within the feed's bound of a second, and a
// token missing from the index (issued elsewhere a moment ago) is looked
// up in the store, at most 100 times a second per replica. While
// the feed is not fresh the index is not trusted: each token is read from
// the store with its user, and a store that cannot be read is answered
// 503, never from the cache.
//
// # Passwords
//
// NIST SP 800-63B-4 §3.1.1.2 and OWASP ASVS 5.0 V6.2: at least 15
// characters when the password is the only factor, 8 once TOTP is
// enrolled, up to 1024 bytes (never truncated), no composition rules,
// Unicode NFKC-normalised, refused when it is on the embedded list of
// common passwords (Openwall's public-domain password.lst, see
// gen_blocklist.go) or built from the user name. Hashes are argon2id in PHC
// format with a 16-byte per-user salt, RFC 9106's second recommended
// parameters by default (t=3, m=64 MiB, p=4), compared in constant time,
// and recomputed with the current parameters on the next successful login.
//
// # Throttling and lockout policy
//
// This is the policy OWASP ASVS 5.0 V6.1.1 asks to document:
//
//   - Per account: after 5 consecutive failed attempts the account is
//     locked for 1 minute; each further failure (once the lockout has
//     passed) doubles it — 2, 4, 8 … minutes, capped at 1 hour. After 100
//     consecutive failures (NIST SP 800-63B-4 §3.2.2) password login is
//     disabled until the user recovers the account with a recovery or reset
//     code or an admin runs `hearth user unlock`. A success resets the
//     count. Attempts refused during a lockout do not count. Each attempt
//     is charged in the store as a failure before its password is checked
//     (and given back if it ends undecided: busy, store or log down), so
//     parallel guesses, on one replica or spread over several, get no more
//     tries than sequential ones and no failure is lost (lockout.go).
//   - Per client address (IPv4 address, IPv6 /64): a token bucket of 10
//     attempts refilled at one every 6 seconds, shared by all accounts,
//     against password spraying. A successful login gives its attempt back.
//   - A throttled attempt is answered 429 with Retry-After, even when the
//     password is right.
//   - No enumeration. The failure count is kept per user name as typed,
//     whether or not such a user exists, so an unknown name locks exactly
//     like a real one: an unknown user, a wrong password, a disabled user and
//     a missing or wrong TOTP code all get the same 401 and body after one
//     argon2id evaluation (unknown users are checked against a dummy hash),
//     and a locked name — real or not — gets the same 429 without any.
//   - Recovery and reset codes have their own failure count with the same
//     schedule, so an attacker who keeps a password locked does not also
//     block recovery; device certificates and the local admin socket never
//     depend on either.
//   - argon2id runs at most max_concurrent_hashes at a time (default: CPUs,
//     at most 4) behind a queue of 4× that; beyond it a login is answered
//     503 at once, so memory stays below slots × 64 MiB plus a constant.
//
// The failure counts are in the store (auth.lockout), for real users and
// unknown names alike, and survive a restart; an unknown name's record is
// pruned a day after its last failure, and beyond 100,000 of them the
// oldest go first (a flood of more distinct names: the one way, at that
// cost, in which a locked unknown name could come to answer unlike a
// locked real one). The per-address buckets are per replica, in memory.
//
// # Recovery
//
// Each user holds ten single-use recovery codes (80 bits each, shown once,
// stored as argon2id; consumed atomically, so of concurrent uses of one
// code exactly one succeeds). POST /.hearth/v1/auth/recover sets a new
// password with one, ends every session and clears the lockout. An admin
// (the local socket, or a device with hearth:admin through the gateway)
// can unlock an account, or issue a one-time reset code (160 bits, 30
// minutes) with which the person chooses a new password themselves; an
// admin never chooses or learns it (ASVS 5.0 V6.4.6). A lost TOTP
// authenticator is removed by an admin; recovery codes replace a password,
// not a second factor.
//
// # Tokens
//
// Access tokens (hth_at_…) and refresh tokens (hth_rt_…) carry 256 bits
// from crypto/rand and are stored only as SHA-256. An access token lives 1
// hour at most and ends after 30 minutes unused; it carries at most its
// user's capabilities (a narrower scope may be asked for). A refresh token
// (7 days) is single use: each use returns a new pair in the same family,
// and presenting a used one revokes the family (RFC 9700 §4.14.2). Logout
// revokes the token's family; a password change ends the user's other
// sessions; recovery, reset and disabling end all of them. A user holds
// at most 100 sessions; a login beyond that ends the oldest. Verification
// ([Service.AuthenticateToken]) reads only an in-memory index kept in step
// with the store (see Replicas), so a revocation takes effect at once on
// the replica that made it and within a second on the others.
//
// # Passkeys
//
// WebAuthn passkeys (discoverable, user verification required), with the
// gateway's public origin as relying party once [Service.EnablePasskeys]
// has it: sign-in without a password, or as the second factor after one.
// Only public data is stored (credential ID, public key, sign count,
// transports, backup flags, a label, a random user handle). Attempts are
// throttled per address and per account like passwords, the options are
// the same for every name, a sign count that goes back is refused, and a
// passkey is added only by its owner from a sign-in of the last 5 minutes;
// an admin may remove one, never add one. A ceremony (options, then the
// authenticator's answer) is kept by no replica: its ID is the ceremony
// sealed with AES-256-GCM under a key in the store, so the answer may reach
// any replica, and finishing it records its nonce once. Sessions from a
// passkey are multi-factor and phishing resistant (NIST SP 800-63B-4
// §3.2.5). See passkey.go.
//
// # Audit
//
// Every login and failure, lockout, unlock, recovery, password change,
// token issue and revocation, and user change is recorded through
// audit.Recorder before the answer; state changes commit only after their
// entry is durable, and a failing log answers 503 with nothing changed.
// No password, token or code reaches the log: tokens and codes are named by
// the first 12 hex digits of their SHA-256. Throttled (429) attempts are
// recorded at most once per address or name every 10 seconds, with the
// number of similar ones left out, so a flood cannot become a flood of
// audit writes.
package auth
