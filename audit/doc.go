// Package audit is hearth's signed, tamper-evident, append-only audit log:
// every decision and change (a gateway request, a login, an enrollment, an
// admin call) is recorded here, durably, before the request proceeds.
//
// # Trust boundary
//
// The log trusts its callers to describe events truthfully and to keep
// secrets out of free text; it refuses meta keys that look like secrets
// (see ValidateEvent) and offers Log.SecretID to name a secret instead. It
// does not trust its own files once written: Verify recomputes everything
// from the entries and checks it against the signed checkpoints, and with a
// checkpoint saved elsewhere (or an independently kept verifier key) it
// detects a rewrite by someone who holds the data dir, signing key
// included. The HTTP handler serves only checkpoints and proofs, never
// entries, and authenticates no one: the server mounts it behind its
// authentication.
//
// # Files
//
// <data dir>/audit (0700), created by Init:
//
//	log.key        the Ed25519 signing key, note signer-key format (0600)
//	log.pub        its verifier key, <origin>+<hash>+<key>
//	hmac.key       the SecretID HMAC key, base64 (0600)
//	segments/      NNNNNNNN.log, named by the index of the first entry;
//	               one JSON entry per line, rotated past Config.SegmentSize
//	hashes         the Merkle tree's stored hashes (tlog.StoredHashes),
//	               32 bytes each, so that proofs need no recomputation
//	checkpoints    every signed checkpoint, in order, each followed by an
//	               empty line
//	lock           flock'ed by the one process that has the log open
//
// Entries are the leaves of an RFC 6962 Merkle tree, hashed with
// golang.org/x/mod/sumdb/tlog (the leaf is the entry's line without its
// newline); checkpoints are hearth's own four-line text (see Checkpoint)
// signed with golang.org/x/mod/sumdb/note.
//
// # Guarantees
//
// Group commit: concurrent Records are batched (up to MaxBatchLimit); a
// batch's entries are written and fsynced, then one checkpoint covering
// them is written and fsynced, and only then is any Record of the batch
// answered. (The stored hashes are written with the batch but fsynced only
// when a segment fills up and at Close: Open recomputes those of the last
// segment from its entries.) So every acknowledged entry is covered by a
// durable signed checkpoint, and the cost of fsync is per batch, not per
// entry.
//
// Fail closed: if a write or fsync fails (disk full, I/O error, read-only
// file system), Record returns an error and the in-memory state does not
// advance; the caller refuses its request (HTTP 503). The next batch first
// truncates whatever the failed one left, so the log recovers by itself
// once writing works again.
//
// Crash safety: see Open. Entries past the last complete checkpoint were
// never acknowledged and are discarded; no acknowledged entry is lost.
//
// Entries are numbered in the order the writer takes them; an entry's time
// is when Record was called, so times of concurrent entries may be slightly
// out of order.
//
// # Reading and checking
//
// Reader and Verify work on the files alone, read only, whether or not a
// process has the log open; they see the state of the latest complete
// checkpoint. Verify streams the entries in constant memory; its cost is
// one SHA-256 per entry and node plus one Ed25519 signature check per
// checkpoint, so a log written by many concurrent callers (large batches)
// verifies faster than one written by a single caller (a checkpoint per
// entry). Log.Handler serves the latest checkpoint and inclusion and
// consistency proofs; CheckInclusion and CheckConsistency check them on a
// client.
package audit
