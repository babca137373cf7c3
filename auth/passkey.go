package auth

// Passkeys: WebAuthn Level 3 registration and authentication through
// github.com/go-webauthn/webauthn (the maintained Go relying-party
// library; hearth verifies nothing of the attestation or assertion itself),
// with the relying party bound to the gateway's public origin.
//
// A passkey with user verification is a multi-factor, phishing-resistant
// authenticator (NIST SP 800-63B-4 §3.1.7 multi-factor cryptographic
// authenticator, §3.2.5 verifier-name binding; syncable passkeys accepted at
// AAL2). Sessions from a passkey carry MFA and PhishingResistant, which
// authz's requirements may ask for. What is stored is public: the
// credential ID, its public key, sign count, transports, backup flags, the
// person's label and times, and a random user handle per user (WebAuthn
// §14.6.1: not the user name).
//
// The rules are a password's (OWASP ASVS 5.0 V6.3, V6.5, V6.8): every
// attempt takes from the client address's bucket; an attempt on a known
// passkey takes part in its owner's lockout (its own failure count, so that
// password guessing does not lock out a passkey); the options a sign-in
// gets are the same whatever name was typed (discoverable credentials, no
// allowCredentials), so they reveal nothing; every registration, use,
// failure and removal is audited; a sign count that does not go forward
// (WebAuthn §6.1.1: a cloned authenticator) is refused and audited.
// Recovery codes still replace a lost password whether or not passkeys
// exist; an admin can remove a user's passkeys, never add one (a
// registration must come from the user's own fresh session).

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/store"
)

const (
	bucketPasskeys       = "auth.passkeys"        // credential ID → passkeyRecord
	bucketPasskeyHandles = "auth.passkey_handles" // "h"+handle → name, "u"+name → handle
)

// Passkey limits and the freshness a registration needs.
const (
	// PasskeyFreshLogin is how recent the session adding a passkey must
	// be (OWASP ASVS 5.0 V7.5.3: re-authentication before adding an
	// authenticator).
	PasskeyFreshLogin = 5 * time.Minute
	// MaxPasskeysPerUser bounds one user's passkeys.
	MaxPasskeysPerUser = 20
	// MaxPasskeyBody bounds a posted attestation or assertion (a real one
	// is well under 4 KiB).
	MaxPasskeyBody = 64 << 10
	// passkeyCeremonyTTL bounds a ceremony from options to answer.
	passkeyCeremonyTTL = 5 * time.Minute
	// maxCeremonies bounds the in-memory ceremonies (options handed out
	// and not yet answered).
	maxCeremonies = 10000
	maxLabel      = 64
	kindPasskey   = "passkey"
)

// Passkey errors callers branch on.
var (
	// ErrPasskeysOff means the server has no public origin for WebAuthn.
	ErrPasskeysOff = errors.New("auth: passkeys are not enabled (the gateway needs a public URL with a host name)")
	// ErrNotSelf refuses a passkey registration made for someone else: an
	// admin can remove a user's passkeys but never add one.
	ErrNotSelf = errors.New("auth: a passkey can only be added by its owner, signed in")
	// ErrStaleLogin asks for a fresh sign-in before adding a passkey.
	ErrStaleLogin = errors.New("auth: adding a passkey needs a sign-in from the last 5 minutes")
	// ErrNoPasskey is returned when there is no such passkey (or, after a
	// correct password, when the user has none).
	ErrNoPasskey = errors.New("auth: no such passkey")
	// ErrTooManyPasskeys is returned beyond MaxPasskeysPerUser.
	ErrTooManyPasskeys = errors.New("auth: too many passkeys; remove one first")
	// ErrPasskeyRefused is a registration the authenticator's answer did
	// not support (wrong origin, no user verification, malformed).
	ErrPasskeyRefused = errors.New("auth: the passkey was not accepted (it must be made on this site, with a PIN or biometric)")
)

// passkeyRecord is a passkey as stored. Nothing in it is secret.
type passkeyRecord struct {
	User       string              `json:"user"`
	Label      string              `json:"label"`
	Credential webauthn.Credential `json:"credential"` // ID, public key, sign count, transports, flags, AAGUID
	Created    time.Time           `json:"created"`
	LastUsed   time.Time           `json:"last_used,omitzero"`
}

// PasskeyInfo is a passkey as the Account page lists it.
type PasskeyInfo struct {
	ID             string    `json:"id"` // base64url credential ID
	Label          string    `json:"label"`
	Created        time.Time `json:"created"`
	LastUsed       time.Time `json:"last_used,omitzero"`
	Transports     []string  `json:"transports,omitempty"`
	BackupEligible bool      `json:"backup_eligible"` // syncable
	BackedUp       bool      `json:"backed_up"`
}

// PasskeyOptions is what a browser passes to navigator.credentials:
// Ceremony names this attempt in the answer; PublicKey is the JSON of
// PublicKeyCredentialCreationOptions or …RequestOptions (WebAuthn §5.4,
// §5.5), ready for PublicKeyCredential.parse…OptionsFromJSON.
type PasskeyOptions struct {
	Ceremony  string          `json:"ceremony"`
	PublicKey json.RawMessage `json:"publicKey"`
}

// ceremony is an options → answer exchange in progress.
type ceremony struct {
	kind    string // "register", "login", "second"
	user    string // register, second: the user; login: the typed name or ""
	hash    string // second: the password hash checked, which must not change
	data    webauthn.SessionData
	expires time.Time
}

// passkeys is the Service's WebAuthn state.
type passkeys struct {
	wa  atomic.Pointer[webauthn.WebAuthn]
	mu  sync.Mutex
	cer map[string]*ceremony
}

// waUser is a user as the library sees it.
type waUser struct {
	name   string
	handle []byte
	creds  []webauthn.Credential
}

func (u *waUser) WebAuthnID() []byte                         { return u.handle }
func (u *waUser) WebAuthnName() string                       { return u.name }
func (u *waUser) WebAuthnDisplayName() string                { return u.name }
func (u *waUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

// EnablePasskeys sets the relying party: origin is the gateway's public
// URL ("https://hearth.home.arpa:8443"), whose host is the RP ID (WebAuthn
// §5.1.2; an IP address cannot be one); name is shown by authenticators.
func (s *Service) EnablePasskeys(origin, name string) error {
	u, err := url.Parse(origin)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return fmt.Errorf("auth: passkeys need an https public URL, not %q", origin)
	}
	if net.ParseIP(u.Hostname()) != nil {
		return fmt.Errorf("auth: passkeys need a public URL with a host name, not the address %s (WebAuthn's relying party is a domain)", u.Hostname())
	}
	if name == "" {
		name = "hearth"
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID: u.Hostname(), RPDisplayName: name, RPOrigins: []string{u.Scheme + "://" + u.Host},
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Enforce: true, Timeout: passkeyCeremonyTTL, TimeoutUVD: passkeyCeremonyTTL},
			Registration: webauthn.TimeoutConfig{Enforce: true, Timeout: passkeyCeremonyTTL, TimeoutUVD: passkeyCeremonyTTL},
		},
	})
	if err != nil {
		return fmt.Errorf("auth: passkeys: %w", err)
	}
	s.pk.wa.Store(wa)
	return nil
}

// PasskeysEnabled reports whether EnablePasskeys succeeded.
func (s *Service) PasskeysEnabled() bool { return s.pk.wa.Load() != nil }

// parseAttestation parses a registration answer (the JSON of a
// PublicKeyCredential from navigator.credentials.create) after bounding
// it, and refuses a credential ID outside 1 to 1023 bytes. The library
// does the CBOR and signature work.
func parseAttestation(body []byte) (*protocol.ParsedCredentialCreationData, error) {
	if len(body) == 0 || len(body) > MaxPasskeyBody {
		return nil, ErrPasskeyRefused
	}
	p, err := protocol.ParseCredentialCreationResponseBytes(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPasskeyRefused, err)
	}
	if len(p.RawID) == 0 || len(p.RawID) > 1023 { // WebAuthn §5.8.3
		return nil, fmt.Errorf("%w: a credential ID of %d bytes", ErrPasskeyRefused, len(p.RawID))
	}
	return p, nil
}

// parseAssertion parses a sign-in answer (from navigator.credentials.get)
// after bounding it; a credential ID longer than WebAuthn's 1023 bytes
// (§5.8.3) is refused before any lookup.
func parseAssertion(body []byte) (*protocol.ParsedCredentialAssertionData, error) {
	if len(body) == 0 || len(body) > MaxPasskeyBody {
		return nil, ErrInvalidCredentials
	}
	p, err := protocol.ParseCredentialRequestResponseBytes(body)
	if err != nil || len(p.RawID) == 0 || len(p.RawID) > 1023 {
		return nil, ErrInvalidCredentials
	}
	return p, nil
}

func (s *Service) webauthn() (*webauthn.WebAuthn, error) {
	wa := s.pk.wa.Load()
	if wa == nil {
		return nil, ErrPasskeysOff
	}
	return wa, nil
}

// newCeremony stores c under a fresh random ID.
func (s *Service) newCeremony(c *ceremony) (string, error) {
	id, err := s.randomString(20)
	if err != nil {
		return "", err
	}
	now := s.now()
	c.expires = now.Add(passkeyCeremonyTTL)
	s.pk.mu.Lock()
	defer s.pk.mu.Unlock()
	if s.pk.cer == nil {
		s.pk.cer = map[string]*ceremony{}
	}
	if len(s.pk.cer) >= maxCeremonies {
		for k, v := range s.pk.cer {
			if !now.Before(v.expires) {
				delete(s.pk.cer, k)
			}
		}
		if len(s.pk.cer) >= maxCeremonies {
			return "", ErrBusy
		}
	}
	s.pk.cer[id] = c
	return id, nil
}

// takeCeremony removes and returns ceremony id of kind (single use), or
// nil when it is unknown, of another kind or expired.
func (s *Service) takeCeremony(id, kind string) *ceremony {
	s.pk.mu.Lock()
	c := s.pk.cer[id]
	delete(s.pk.cer, id)
	s.pk.mu.Unlock()
	if c == nil || c.kind != kind || !s.now().Before(c.expires) {
		return nil
	}
	return c
}

func options(id string, v any) (*PasskeyOptions, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	// The library wraps the options as {"publicKey": {...}} (or
	// {"mediation":…, "publicKey":…}); hand over the inner object.
	var outer struct {
		PublicKey json.RawMessage `json:"publicKey"`
	}
	if err := json.Unmarshal(b, &outer); err != nil || len(outer.PublicKey) == 0 {
		return nil, fmt.Errorf("auth: passkey options: %v", err)
	}
	return &PasskeyOptions{Ceremony: id, PublicKey: outer.PublicKey}, nil
}

// loadWAUser reads name's handle and passkeys.
func loadWAUser(tx store.Tx, name string) (*waUser, []*passkeyRecord, error) {
	u := &waUser{name: name}
	if h := tx.Bucket(bucketPasskeyHandles).Get([]byte("u" + name)); h != nil {
		u.handle = bytes.Clone(h)
	}
	var recs []*passkeyRecord
	err := tx.Bucket(bucketPasskeys).ForEach(func(k, v []byte) error {
		var r passkeyRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("auth: passkey %x: corrupt record: %w", k[:min(len(k), 6)], err)
		}
		if r.User == name {
			recs = append(recs, &r)
			u.creds = append(u.creds, r.Credential)
		}
		return nil
	})
	return u, recs, err
}

func credID(id []byte) string { return base64.RawURLEncoding.EncodeToString(id) }

// BeginPasskeyRegistration starts adding a passkey for name. The caller
// (ctx's principal) must be user:name itself, signed in at authTime no
// more than PasskeyFreshLogin ago: an admin never adds one for someone.
func (s *Service) BeginPasskeyRegistration(ctx context.Context, name string, authTime time.Time) (*PasskeyOptions, error) {
	wa, err := s.webauthn()
	if err != nil {
		return nil, err
	}
	if actor(ctx) != "user:"+name {
		return nil, ErrNotSelf
	}
	if age := s.now().Sub(authTime); authTime.IsZero() || age > PasskeyFreshLogin || age < -time.Minute {
		return nil, ErrStaleLogin
	}
	var wu *waUser
	err = s.view(ctx, func(tx store.Tx) error {
		u, err := getUser(tx, name)
		if err != nil {
			return err
		}
		if u == nil || u.Disabled {
			return ErrNoUser
		}
		wu, _, err = loadWAUser(tx, name)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(wu.creds) >= MaxPasskeysPerUser {
		return nil, ErrTooManyPasskeys
	}
	if wu.handle == nil {
		if wu.handle, err = s.randomBytes(32); err != nil {
			return nil, err
		}
	}
	excl := make([]protocol.CredentialDescriptor, len(wu.creds))
	for i := range wu.creds {
		excl[i] = wu.creds[i].Descriptor()
	}
	// Discoverable (resident) and user-verified: a passkey, usable
	// without typing a name, multi-factor by itself. No attestation is
	// asked for (a household trusts the person, not the model).
	creation, data, err := wa.BeginRegistration(wu,
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			ResidentKey: protocol.ResidentKeyRequirementRequired, RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification: protocol.VerificationRequired,
		}),
		webauthn.WithConveyancePreference(protocol.PreferNoAttestation),
		webauthn.WithExclusions(excl),
	)
	if err != nil {
		return nil, fmt.Errorf("auth: passkey registration: %w", err)
	}
	id, err := s.newCeremony(&ceremony{kind: "register", user: name, data: *data})
	if err != nil {
		return nil, err
	}
	return options(id, creation)
}

// FinishPasskeyRegistration checks the authenticator's answer to ceremony
// id and stores the passkey under label.
func (s *Service) FinishPasskeyRegistration(ctx context.Context, name, id, label string, body []byte, client string) (*PasskeyInfo, error) {
	wa, err := s.webauthn()
	if err != nil {
		return nil, err
	}
	if actor(ctx) != "user:"+name {
		return nil, ErrNotSelf
	}
	c := s.takeCeremony(id, "register")
	if c == nil || c.user != name {
		return nil, fmt.Errorf("%w: the request expired; try again", ErrPasskeyRefused)
	}
	label = cleanLabel(label)
	parsed, err := parseAttestation(body)
	if err != nil {
		return nil, s.passkeyRefused(ctx, name, client, err)
	}
	wu := &waUser{name: name, handle: c.data.UserID}
	cred, err := wa.CreateCredential(wu, c.data, parsed)
	if err != nil {
		return nil, s.passkeyRefused(ctx, name, client, err)
	}
	if !cred.Flags.UserVerified {
		return nil, s.passkeyRefused(ctx, name, client, errors.New("no user verification"))
	}
	cred.Attestation = webauthn.CredentialAttestation{} // not needed to verify; keeps the record small
	now := s.now().UTC()
	rec := &passkeyRecord{User: name, Label: label, Credential: *cred, Created: now}
	err = s.modifyUser(ctx, name, func(tx store.Tx, u *userRecord) ([]audit.Event, error) {
		if u.Disabled {
			return nil, ErrNoUser
		}
		hb := tx.Bucket(bucketPasskeyHandles)
		if h := hb.Get([]byte("u" + name)); h != nil && !bytes.Equal(h, c.data.UserID) {
			return nil, fmt.Errorf("%w: the request expired; try again", ErrPasskeyRefused)
		}
		pb := tx.Bucket(bucketPasskeys)
		if pb.Get(cred.ID) != nil {
			return nil, fmt.Errorf("%w: that passkey is already registered", ErrPasskeyRefused)
		}
		_, have, err := loadWAUser(tx, name)
		if err != nil {
			return nil, err
		}
		if len(have) >= MaxPasskeysPerUser {
			return nil, ErrTooManyPasskeys
		}
		if err := hb.Put([]byte("u"+name), c.data.UserID); err != nil {
			return nil, err
		}
		if err := hb.Put(append([]byte("h"), c.data.UserID...), []byte(name)); err != nil {
			return nil, err
		}
		if err := putJSON(tx, bucketPasskeys, cred.ID, rec); err != nil {
			return nil, err
		}
		return []audit.Event{s.event(ctx, audit.EventUserChange, audit.OutcomeSuccess, "user:"+name, "passkey added", client, map[string]string{
			"action": "passkey-add", "passkey_id": shortID(cred.ID), "label": label,
			"backup_eligible": fmt.Sprint(cred.Flags.BackupEligible), "aaguid": fmt.Sprintf("%x", cred.Authenticator.AAGUID),
		})}, nil
	})
	if err != nil {
		return nil, err
	}
	info := rec.info()
	return &info, nil
}

// passkeyRefused records a refused registration and returns the error.
func (s *Service) passkeyRefused(ctx context.Context, name, client string, cause error) error {
	s.log.Debug().Str("user", name).Err(cause).Msg("auth: passkey registration refused")
	if err := s.record(ctx, s.event(ctx, audit.EventUserChange, audit.OutcomeFailure, "user:"+name, "passkey registration refused: "+clip(cause.Error(), 160), client, map[string]string{"action": "passkey-add"})); err != nil {
		return err
	}
	return ErrPasskeyRefused
}

// shortID names a credential in audit entries: its first 12 base64url
// characters (public, but there is no need for more).
func shortID(id []byte) string {
	s := credID(id)
	if len(s) > 12 {
		s = s[:12]
	}
	return s
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func cleanLabel(l string) string {
	l = strings.Join(strings.Fields(l), " ")
	if l == "" {
		l = "passkey"
	}
	if r := []rune(l); len(r) > maxLabel {
		l = string(r[:maxLabel])
	}
	return l
}

func (r *passkeyRecord) info() PasskeyInfo {
	ts := make([]string, len(r.Credential.Transport))
	for i, t := range r.Credential.Transport {
		ts[i] = string(t)
	}
	return PasskeyInfo{ID: credID(r.Credential.ID), Label: r.Label, Created: r.Created, LastUsed: r.LastUsed, Transports: ts,
		BackupEligible: r.Credential.Flags.BackupEligible, BackedUp: r.Credential.Flags.BackupState}
}

// Passkeys lists name's passkeys, oldest first.
func (s *Service) Passkeys(ctx context.Context, name string) ([]PasskeyInfo, error) {
	var out []PasskeyInfo
	err := s.view(ctx, func(tx store.Tx) error {
		out = out[:0]
		_, recs, err := loadWAUser(tx, name)
		for _, r := range recs {
			out = append(out, r.info())
		}
		return err
	})
	slicesSortByCreated(out)
	return out, err
}

func slicesSortByCreated(ps []PasskeyInfo) {
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && ps[j].Created.Before(ps[j-1].Created); j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}

// RenamePasskey sets the label of name's passkey id.
func (s *Service) RenamePasskey(ctx context.Context, name, id, label, client string) error {
	label = cleanLabel(label)
	return s.changePasskeys(ctx, name, id, client, func(tx store.Tx, key []byte, r *passkeyRecord) (audit.Event, error) {
		r.Label = label
		return s.event(ctx, audit.EventUserChange, audit.OutcomeSuccess, "user:"+name, "passkey renamed", client, map[string]string{
			"action": "passkey-rename", "passkey_id": shortID(key), "label": label,
		}), putJSON(tx, bucketPasskeys, key, r)
	})
}

// RemovePasskey removes name's passkey id; id "" removes all of them (an
// admin's remedy for a lost or stolen authenticator). The user's own
// sessions are not ended: a removal by its owner comes from one of them.
func (s *Service) RemovePasskey(ctx context.Context, name, id, client string) error {
	return s.changePasskeys(ctx, name, id, client, func(tx store.Tx, key []byte, r *passkeyRecord) (audit.Event, error) {
		return s.event(ctx, audit.EventUserChange, audit.OutcomeSuccess, "user:"+name, "passkey removed", client, map[string]string{
			"action": "passkey-remove", "passkey_id": shortID(key), "label": r.Label,
		}), tx.Bucket(bucketPasskeys).Delete(key)
	})
}

// changePasskeys runs fn on name's passkey id (or all when id is "") in
// one audited transaction.
func (s *Service) changePasskeys(ctx context.Context, name, id, client string, fn func(tx store.Tx, key []byte, r *passkeyRecord) (audit.Event, error)) error {
	var want []byte
	if id != "" {
		var err error
		if want, err = base64.RawURLEncoding.DecodeString(id); err != nil || len(want) == 0 || len(want) > 1023 {
			return ErrNoPasskey
		}
	}
	return s.commit(ctx, func(tx store.Tx) ([]audit.Event, error) {
		if u, err := getUser(tx, name); err != nil {
			return nil, err
		} else if u == nil {
			return nil, ErrNoUser
		}
		_, recs, err := loadWAUser(tx, name)
		if err != nil {
			return nil, err
		}
		var evs []audit.Event
		for _, r := range recs {
			if want != nil && !bytes.Equal(r.Credential.ID, want) {
				continue
			}
			ev, err := fn(tx, r.Credential.ID, r)
			if err != nil {
				return nil, err
			}
			evs = append(evs, ev)
		}
		if len(evs) == 0 && want != nil {
			return nil, ErrNoPasskey
		}
		return evs, nil
	})
}

// BeginPasskeyLogin hands out the options of a passkey sign-in. They are
// the same for every caller — discoverable credentials, user verification
// required, no allowCredentials — so they say nothing about whether
// username (which may be empty) exists or has passkeys (ASVS 5.0 V6.3.8).
// A username given is bound to the ceremony: the passkey must be that
// user's, and the attempt counts against that name.
func (s *Service) BeginPasskeyLogin(ctx context.Context, username string) (*PasskeyOptions, error) {
	return s.beginDiscoverable("login", username)
}

func (s *Service) beginDiscoverable(kind, username string) (*PasskeyOptions, error) {
	wa, err := s.webauthn()
	if err != nil {
		return nil, err
	}
	assertion, data, err := wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return nil, fmt.Errorf("auth: passkey sign-in: %w", err)
	}
	id, err := s.newCeremony(&ceremony{kind: kind, user: canonicalName(username), data: *data})
	if err != nil {
		return nil, err
	}
	return options(id, assertion)
}

// FinishPasskeyLogin checks a passkey sign-in and issues a session that is
// multi-factor and phishing resistant. Errors as Login's.
func (s *Service) FinishPasskeyLogin(ctx context.Context, id string, body []byte, client string) (*Session, error) {
	wa, err := s.webauthn()
	if err != nil {
		return nil, err
	}
	c := s.takeCeremony(id, "login")
	return s.finishAssertion(ctx, wa, c, body, client, "passkey", nil)
}

// BeginPasskeySecondFactor hands out the options of a password + passkey
// sign-in: the same as BeginPasskeyLogin's, whatever the name, and no
// password is checked yet — it is checked with the passkey's answer in
// FinishPasskeySecondFactor, so that no answer tells a right password from
// a wrong one before the second factor (a password oracle would undo what
// the second factor hides; WebAuthn §14.6.2 on username enumeration).
func (s *Service) BeginPasskeySecondFactor(ctx context.Context, username string) (*PasskeyOptions, error) {
	return s.beginDiscoverable("second", username)
}

// FinishPasskeySecondFactor checks req's password (throttled, counted and
// audited exactly as Login) and then the passkey's answer, which must be
// a passkey of that user; every failure is the one ErrInvalidCredentials.
// The session is multi-factor and phishing resistant.
func (s *Service) FinishPasskeySecondFactor(ctx context.Context, id string, req LoginRequest, body []byte) (*Session, error) {
	wa, err := s.webauthn()
	if err != nil {
		return nil, err
	}
	c := s.takeCeremony(id, "second")
	pw, err := normalizePassword(req.Password)
	if err != nil {
		pw = ""
	}
	name := canonicalName(req.Username)
	att, err := s.admit(ctx, kindLogin, name, req.Client, audit.EventAuthLogin)
	if err != nil {
		return nil, err
	}
	defer att.end(ctx)
	u, _, err := s.checkPassword(ctx, name, pw)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return nil, att.fail(ctx, "wrong password or unknown user")
	}
	if c == nil || c.user != name {
		return nil, att.fail(ctx, "expired or unknown passkey request")
	}
	c.hash = u.Hash // the password must not change before the session is issued
	return s.finishAssertion(ctx, wa, c, body, req.Client, "password+passkey", att)
}

// finishAssertion verifies an assertion for ceremony c (nil: unknown or
// expired) and issues a session with method. pw is the password attempt
// of a password + passkey sign-in (nil for a passkey alone), which already
// took from the address's bucket and is decided with the session.
func (s *Service) finishAssertion(ctx context.Context, wa *webauthn.WebAuthn, c *ceremony, body []byte, client, method string, pw *attempt) (*Session, error) {
	now := s.now()
	if pw == nil {
		if d, ok := s.thr.takeClient(client, now); !ok {
			return nil, s.refusedPasskey(ctx, "addr\x00"+clientKey(client), "", client, "throttled: too many attempts from this address", d)
		}
	}
	parsed, perr := parseAssertion(body)
	var rec *passkeyRecord
	var handleOwner string
	if perr == nil {
		if err := s.view(ctx, func(tx store.Tx) error {
			rec, handleOwner = nil, ""
			if v := tx.Bucket(bucketPasskeys).Get(parsed.RawID); v != nil {
				rec = new(passkeyRecord)
				if err := json.Unmarshal(v, rec); err != nil {
					return err
				}
			}
			if h := parsed.Response.UserHandle; len(h) > 0 {
				handleOwner = string(tx.Bucket(bucketPasskeyHandles).Get(append([]byte("h"), h...)))
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if perr != nil || rec == nil || c == nil {
		// Nothing names an account: only the address's bucket counts.
		why := "unknown passkey"
		switch {
		case perr != nil:
			why = "malformed passkey answer"
		case c == nil:
			why = "expired or unknown passkey request"
		}
		res := "user:(unknown)"
		if rec != nil {
			res = "user:" + rec.User
		}
		if err := s.record(ctx, s.event(ctx, audit.EventAuthLogin, audit.OutcomeFailure, res, why, client, map[string]string{"method": method})); err != nil {
			return nil, err
		}
		return nil, ErrInvalidCredentials
	}
	name := rec.User
	att, err := s.charge(ctx, kindPasskey, name, now)
	var locked *errLocked
	if errors.As(err, &locked) {
		return nil, s.refusedPasskey(ctx, "name\x00"+acctKey(kindPasskey, name), name, client, "throttled: account locked", locked.d)
	}
	if err != nil {
		return nil, err
	}
	att.client, att.event = client, audit.EventAuthLogin
	defer att.end(ctx)
	fail := func(reason string) error { return att.fail(ctx, reason) }
	if c.user != "" && c.user != name {
		return nil, fail("passkey of another user than the one named")
	}
	var wu *waUser
	if err := s.view(ctx, func(tx store.Tx) error {
		var err error
		wu, _, err = loadWAUser(tx, name)
		return err
	}); err != nil {
		return nil, err
	}
	if handleOwner != name {
		return nil, fail("passkey user handle does not match its owner")
	}
	cred, err := wa.ValidateDiscoverableLogin(func(_, _ []byte) (webauthn.User, error) { return wu, nil }, c.data, parsed)
	if err != nil {
		s.log.Debug().Err(err).Str("user", name).Msg("auth: passkey assertion refused")
		return nil, fail("passkey assertion refused: " + clip(protocolDetails(err), 160))
	}
	if cred.Authenticator.CloneWarning {
		// WebAuthn §6.1.1, §7.2 step 22: a counter that does not go
		// forward means two copies of the key; refuse, and keep the
		// stored count, so the copy that is ahead still works.
		if err := s.record(ctx, s.event(ctx, audit.EventAuthLogin, audit.OutcomeFailure, "user:"+name,
			"passkey sign count went back: possibly a cloned authenticator", client, map[string]string{
				"method": method, "passkey_id": shortID(cred.ID), "sign_count": fmt.Sprint(parsed.Response.AuthenticatorData.Counter),
				"stored_sign_count": fmt.Sprint(rec.Credential.Authenticator.SignCount), "clone_warning": "true",
			})); err != nil {
			return nil, err
		}
		return nil, fail("passkey refused: cloned authenticator")
	}
	if !parsed.Response.AuthenticatorData.Flags.HasUserVerified() {
		return nil, fail("passkey used without user verification")
	}
	var sess *Session
	var h [32]byte
	var lt *liveToken
	var evicted [][32]byte
	uctx := authz.WithPrincipal(ctx, &authz.Principal{ID: "user:" + name})
	err = s.commit(ctx, func(tx store.Tx) ([]audit.Event, error) {
		u, err := getUser(tx, name)
		if err != nil {
			return nil, err
		}
		if u == nil || u.Disabled || (c.kind == "second" && u.Hash != c.hash) {
			return nil, ErrInvalidCredentials
		}
		v := tx.Bucket(bucketPasskeys).Get(cred.ID)
		var cur passkeyRecord
		if v == nil || json.Unmarshal(v, &cur) != nil || cur.User != name {
			return nil, ErrInvalidCredentials // removed meanwhile
		}
		// A concurrent use got in first with a count at least as high.
		if c := cur.Credential.Authenticator.SignCount; c != 0 && cred.Authenticator.SignCount <= c {
			return nil, ErrInvalidCredentials
		}
		cur.Credential.Authenticator.SignCount = cred.Authenticator.SignCount
		cur.Credential.Flags.BackupState = cred.Flags.BackupState
		cur.LastUsed = s.now().UTC()
		if err := putJSON(tx, bucketPasskeys, cred.ID, &cur); err != nil {
			return nil, err
		}
		kinds := []string{kindPasskey}
		if c.kind == "second" { // a password login that succeeded
			kinds = append(kinds, kindLogin)
		}
		if err := clearLockoutTx(tx, name, kinds...); err != nil {
			return nil, err
		}
		caps, err := s.userCaps(u)
		if err != nil {
			return nil, err
		}
		var capEvs []audit.Event
		if evicted, capEvs, err = s.capSessionsTx(uctx, tx, name, client); err != nil {
			return nil, err
		}
		var ev audit.Event
		sess, h, lt, ev, err = s.issueTx(uctx, tx, grant{user: name, caps: caps, authTime: s.now().UTC(), mfa: true, pr: true, method: method, client: client})
		login := s.event(uctx, audit.EventAuthLogin, audit.OutcomeSuccess, "user:"+name, "", client, map[string]string{
			"method": method, "mfa": "true", "phishing_resistant": "true", "passkey_id": shortID(cred.ID), "label": cur.Label,
		})
		return append([]audit.Event{login}, append(capEvs, ev)...), err
	}, s.publishing(&h, &lt, &evicted))
	if errors.Is(err, ErrInvalidCredentials) {
		return nil, fail("passkey removed, user disabled or password changed during sign-in")
	}
	if err != nil {
		return nil, err
	}
	att.ok()
	if pw != nil {
		pw.ok()
	}
	s.thr.refundClient(client)
	return sess, nil
}

// refusedPasskey records a throttled passkey attempt (at most once per key
// every 10 seconds, as admit does) and returns the ThrottledError.
func (s *Service) refusedPasskey(ctx context.Context, key, name, client, why string, d time.Duration) error {
	res := "user:(unknown)"
	if name != "" {
		res = "user:" + name
	}
	return s.refuse(ctx, key, audit.EventAuthLogin, res, client, why, d, map[string]string{"method": "passkey"})
}

// protocolDetails is the library's short reason (never key material).
func protocolDetails(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		if pe.Details != "" {
			return pe.Details
		}
		return pe.Type
	}
	return "invalid"
}
