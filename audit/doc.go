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
// included. The HTTP handler serves checkpoints, proofs and tiles (entries
// included) and authenticates no one: the server mounts it behind its
// authentication.
//
// # Files
//
// <data dir>/audit (0700), created by Init:
//
//	log.key        the Ed25519 signing key, note signer-key format (0600)
//	log.pub        its verifier key, <origin>+<hash>+<key>
//	hmac.key       the SecretID HMAC key, base64 (0600)
//	segments/      NNNNNNNN.seg, named by the index of the first entry:
//	               framed records (see frame.go), each batch's entries then
//	               its signed checkpoint; rotated past Config.SegmentSize.
//	               NNNNNNNN.log: legacy segments, one JSON entry per line,
//	               written before the framed format, still read
//	hashes         the Merkle tree's stored hashes (tlog.StoredHashes),
//	               32 bytes each, so that proofs need no recomputation
//	checkpoints    a cache of the signed checkpoints, each followed by an
//	               empty line, appended after each batch is durable and not
//	               fsynced (legacy logs: their only copy of the checkpoints
//	               before the framed segments)
//	witnesses/     per witness, the latest checkpoint it cosigned
//	lock           flock'ed by the one process that has the log open
//
// Entries are the leaves of an RFC 6962 Merkle tree, hashed with
// golang.org/x/mod/sumdb/tlog (the leaf is the entry's JSON); checkpoints
// are c2sp.org/tlog-checkpoint texts signed as c2sp.org/signed-note notes
// with golang.org/x/mod/sumdb/note (see Checkpoint).
//
// # Guarantees
//
// Group commit: concurrent Records are batched (up to MaxBatchLimit); a
// batch's entries and one checkpoint covering them are appended to the
// segment in one write and made durable with one fdatasync (the segment is
// zero-filled ahead of the writer, so the append changes no size and needs
// no journal commit), and only then is any Record of the batch answered.
// (The stored hashes are written with the batch but fsynced only when a
// segment fills up and at Close: Open recomputes those of the last segment
// from its entries.) So every acknowledged entry is covered by a durable
// signed checkpoint, and the cost of durability is one fdatasync per
// batch, not per entry.
//
// Fail closed: if a write or fdatasync fails (disk full, I/O error,
// read-only file system), Record returns an error and the in-memory state
// does not advance; the caller refuses its request (HTTP 503). The next
// batch first truncates whatever the failed one left, so the log recovers
// by itself once writing works again.
//
// Crash safety: see Open. Records past the last intact checkpoint record
// were never acknowledged and are cut off; no acknowledged entry is lost.
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
// entry). Log.Handler serves the log as c2sp.org/tlog-tiles (checkpoint,
// hash tiles, entry bundles) and inclusion and consistency proofs;
// CheckInclusion and CheckConsistency check the proofs on a client.
// Witnesses (Config.Witnesses) cosign checkpoints with the
// c2sp.org/tlog-witness protocol; Verify with VerifyOptions.Witnesses checks
// their cosignatures.
package audit
