package audit

import (
	"context"
	"time"
)

// Event names. They are stable: tools and people filter on them.
const (
	EventAuthLogin          = "auth.login"
	EventAuthLogout         = "auth.logout"
	EventAuthLockout        = "auth.lockout"
	EventAuthUnlock         = "auth.unlock"
	EventAuthRecover        = "auth.recover"
	EventAuthPasswordChange = "auth.password_change"
	EventTokenIssue         = "token.issue"
	EventTokenRevoke        = "token.revoke"
	EventDeviceAdd          = "device.add"
	EventDeviceEnroll       = "device.enroll"
	EventCertIssue          = "cert.issue"
	EventCertRenew          = "cert.renew"
	EventCertRevoke         = "cert.revoke"
	EventAuthzDecision      = "authz.decision"
	EventConfigChange       = "config.change"
	EventUserChange         = "user.change"
	EventAuditStart         = "audit.start"
	// EventAuditWitness: a witness refused the log's history (outcome
	// failure; meta witness, size; reason the witness's answer).
	EventAuditWitness = "audit.witness"
)

// Outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeAllow   = "allow"
	OutcomeDeny    = "deny"
	OutcomeError   = "error"
)

// Event is one thing that happened, as the audit trail records it. It never
// carries a password, token, key, recovery code or TOTP secret; where the
// identity of a secret matters, Meta holds an HMAC of it (see Log.SecretID).
type Event struct {
	Time      time.Time         `json:"time"`                // UTC; set by the recorder when zero
	Name      string            `json:"event"`               // a dotted name such as auth.login
	Outcome   string            `json:"outcome"`             // success, failure, allow, deny, error
	Principal string            `json:"principal,omitempty"` // user:alice, device:kitchen-pi
	Resource  string            `json:"resource,omitempty"`  // what was acted on: a path, a device, a user
	Reason    string            `json:"reason,omitempty"`    // a sentence a person can read
	Client    string            `json:"client,omitempty"`    // client address, host:port or "local"
	Meta      map[string]string `json:"meta,omitempty"`      // method, capability, serial, …
}

// Recorder is what every part of hearth that needs an audit entry calls.
// Record returns only once the entry is durable (written, fsynced and
// covered by a signed checkpoint); an error means the entry is not in the
// log and the caller must refuse the request it was recording (fail closed,
// HTTP 503).
type Recorder interface {
	Record(ctx context.Context, e Event) error
}

// Discard is a Recorder that records nothing; for tests of other packages
// and for commands that run without a log.
type Discard struct{}

// Record implements Recorder.
func (Discard) Record(context.Context, Event) error { return nil }

// SecretIdentifier is implemented by recorders that can name a secret
// without revealing it (*Log does, with an HMAC under a key of its own).
type SecretIdentifier interface {
	SecretID(secret []byte) string
}

// SecretID returns r's identifier of secret, to put in Event.Meta under a
// key such as token_id, or "" if r cannot name secrets (Discard). Log
// refuses a secret-looking meta key whose value is not such an identifier.
func SecretID(r Recorder, secret []byte) string {
	if s, ok := r.(SecretIdentifier); ok {
		return s.SecretID(secret)
	}
	return ""
}
