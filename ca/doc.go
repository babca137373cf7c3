// Package ca is hearth's local certificate authority: it creates the PKI
// (root, intermediate, the gateway's server certificate, the provisioner key
// that signs enrollment tokens), mints one-time enrollment tokens for
// devices, issues, renews and revokes device certificates, and tells the
// gateway which device a client certificate belongs to.
//
// smallstep's certificates authority is embedded as a library: its API is
// served unchanged on the CA listener ([CA.APIHandler]) so that `step ca
// bootstrap`, `step ca certificate` and `step ca renew` work against hearth,
// and hearth's own enrollment endpoints ([CA.PublicHandler]) go through the
// same authority, the same JWK provisioner and the same one-time-token
// store. smallstep's types stay inside this package.
//
// # Trust boundary
//
// Everything a client sends is untrusted: enrollment tokens are verified
// (signature by this CA's provisioner key, issuer, audience, expiry, the
// device they are bound to, single use: spent in hearth's store, then
// again in smallstep's compare-and-swap token store), CSRs are checked
// (signature, key strength, and no name beyond the device's SPIFFE ID: a
// CSR asking for more is refused, not trimmed), and renewals need a client
// certificate that verifies against this CA and belongs to a device that
// is not revoked.
//
// A device's identity is the URI SAN spiffe://<trust-domain>/device/<name>
// (SPIFFE X509-SVID §2); its capabilities are held server-side in hearth's
// store (bucket "ca.devices"), so a change or a revocation takes effect on
// the next request without reissuing anything. Its certificates are
// indexed in the same store (bucket "ca.device_certs"), written before
// smallstep's own row for each certificate. A certificate counts only if
// exactly its bytes are indexed for that device and not revoked: a
// certificate this CA never recorded (a foreign CA, or one whose audit
// entry failed) is refused by [CA.LookupDevice] even if it carries the
// same name.
//
// # Replicas
//
// The store may be PostgreSQL shared by several hearth replicas
// (internal/store/pgstore), and so may the CA database (Options.CADB,
// internal/pgnosql). Every decision that must hold across replicas is a
// read-check-write in one store transaction — an enrollment token is
// spent once, a phone link is claimed once, a certificate is indexed only
// for a known, unrevoked device, a revocation marks the record and every
// certificate at once — and PostgreSQL's SERIALIZABLE isolation makes
// concurrent transactions equivalent to some serial order of them
// (PostgreSQL 15 manual §13.2.3), so the same code is correct on one
// replica or many. Each replica's device cache follows the store's feed
// and is not trusted when the feed is stale (see deviceStore).
// Provisioners and the name policy are built from hearth.yaml at start,
// on every replica (no admin database). smallstep's CRL is not enabled,
// so no replica generates one (nothing to elect a generator for).
//
// # Fail closed
//
// Every issue, renewal, revocation and refusal is handed to the audit
// Recorder before the answer is sent; if the entry cannot be written, the
// request fails with 503 and a certificate already signed is revoked and
// dropped from the device record, never handed out.
package ca
