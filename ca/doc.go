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
// device they are bound to, single use through smallstep's compare-and-swap
// token store), CSRs are checked (signature, key strength, and no name
// beyond the device's SPIFFE ID: a CSR asking for more is refused, not
// trimmed), and renewals need a client certificate that verifies against
// this CA and belongs to a device that is not revoked.
//
// A device's identity is the URI SAN spiffe://<trust-domain>/device/<name>
// (SPIFFE X509-SVID §2); its capabilities are held server-side in hearth.db
// (bucket "ca.devices"), so a change or a revocation takes effect on the
// next request without reissuing anything. Its certificates are indexed in
// the CA database (<dir>/ca/db, table hearth_device_certs) in the same
// transaction as smallstep's own row for each certificate. A certificate
// counts only if exactly its bytes are indexed for that device and not
// revoked: a certificate this CA never recorded (a foreign CA, or one whose
// audit entry failed) is refused by [CA.LookupDevice] even if it carries
// the same name.
//
// # Fail closed
//
// Every issue, renewal, revocation and refusal is handed to the audit
// Recorder before the answer is sent; if the entry cannot be written, the
// request fails with 503 and a certificate already signed is revoked and
// dropped from the device record, never handed out.
package ca
