package ca

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	josejwt "github.com/go-jose/go-jose/v3/jwt"
	"go.step.sm/crypto/jose"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
)

// EnrollToken is what [CA.AddDevice] returns: a one-time JWK-provisioner
// token (RFC 7519) and what a device needs to use it.
type EnrollToken struct {
	Device    string    `json:"device"`
	Token     string    `json:"token"`
	URL       string    `json:"url"`    // the gateway's URL, for `hearth enroll --ca-url`
	CAURL     string    `json:"ca_url"` // the CA listener, for `step ca bootstrap`
	ExpiresAt time.Time `json:"expires_at"`
	// Fingerprint is the hex SHA-256 of the root certificate to pin.
	Fingerprint string `json:"fingerprint"`
}

// maxTokenLen bounds a token before it is parsed (a hearth token is about
// 700 bytes).
const maxTokenLen = 8 << 10

// tokenClaims are the claims of an enrollment token: the standard ones and
// smallstep's "sans".
type tokenClaims struct {
	jose.Claims
	SANs []string `json:"sans"`
}

// AddDevice records a device with its capabilities and certificate
// lifetime (0: the configured default), and mints its one-time enrollment
// token, valid for ttl (0: the configured default). The token's subject is
// the device name and its only SAN the device's SPIFFE ID, so it can
// enroll that device and no other; it carries a random jti that the device
// record holds, so a newer token for the same device replaces it.
//
// A device that enrolled and was not revoked is not replaced
// (ErrDeviceExists); a device that never enrolled, or was revoked, is
// (re)created.
func (c *CA) AddDevice(ctx context.Context, name string, caps []string, ttl, lifetime time.Duration) (*EnrollToken, error) {
	name = strings.TrimSpace(name)
	if !ValidDeviceName(name) {
		return nil, fmt.Errorf("%w: device name %q: use 1 to 63 lowercase letters, digits and inner dashes", ErrBadRequest, name)
	}
	expanded, err := c.policy.Load().Expand(caps)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if len(expanded) == 0 {
		return nil, fmt.Errorf("%w: grant at least one capability (--caps)", ErrBadRequest)
	}
	if ttl == 0 {
		ttl = c.set.enrollTokenTTL
	}
	if ttl < time.Minute || ttl > MaxEnrollTokenTTL {
		return nil, fmt.Errorf("%w: token TTL %s is not between 1m and %s", ErrBadRequest, ttl, MaxEnrollTokenTTL)
	}
	if lifetime == 0 {
		lifetime = c.set.lifetime
	}
	if lifetime < MinDeviceLifetime || lifetime > c.set.maxLifetime {
		return nil, fmt.Errorf("%w: lifetime %s is not between %s and the maximum %s", ErrBadRequest, lifetime, MinDeviceLifetime, c.set.maxLifetime)
	}
	now := c.now()
	jti, err := randomID()
	if err != nil {
		return nil, err
	}
	tok, err := c.mintToken(name, jti, now, ttl)
	if err != nil {
		return nil, err
	}
	granted := make([]string, 0, len(caps))
	for _, g := range caps {
		if g = strings.TrimSpace(g); g != "" {
			granted = append(granted, g)
		}
	}
	inc, err := randomID()
	if err != nil {
		return nil, err
	}
	// Check before auditing, then audit, then write (re-checking in the
	// write): a refused add records nothing, an audit failure writes nothing.
	check := func(r *deviceRecord, idx *certIndex) error {
		if r == nil || r.Revoked || idx.EnrolledAt.IsZero() {
			return nil
		}
		return fmt.Errorf("%w: %s", ErrDeviceExists, name)
	}
	if r, idx, err := c.devices.load(ctx, name); err != nil {
		return nil, err
	} else if err := check(r, idx); err != nil {
		return nil, err
	}
	if err := c.audit.Record(ctx, audit.Event{
		Name: audit.EventDeviceAdd, Outcome: audit.OutcomeSuccess,
		Principal: principalOf(ctx), Resource: "device:" + name, Client: clientOf(ctx),
		Reason: "enrollment token issued",
		Meta: map[string]string{
			"capabilities": joinCaps(expanded), "lifetime": lifetime.String(),
			"token_expires": now.Add(ttl).UTC().Format(time.RFC3339), "token_id": jti,
		},
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAuditUnavailable, err)
	}
	err = c.devices.change(ctx, name, func(r *deviceRecord, idx *certIndex) (*deviceRecord, *certIndex, error) {
		if err := check(r, idx); err != nil {
			return nil, nil, err
		}
		ri := inc
		if r != nil && !r.Revoked {
			ri = r.Incarnation // a replaced token: same, never-enrolled incarnation
		}
		return &deviceRecord{
			Name: name, Granted: granted, Caps: expanded, Lifetime: lifetime,
			CreatedAt: now.UTC(), Incarnation: ri, TokenID: jti, TokenExpires: now.Add(ttl).UTC(),
		}, nil, nil
	})
	if err != nil {
		c.undone(ctx, audit.EventDeviceAdd, "device:"+name, jti, err)
		return nil, err
	}
	return &EnrollToken{
		Device: name, Token: tok, URL: c.publicURL, CAURL: c.caPublicURL,
		ExpiresAt: now.Add(ttl).UTC(), Fingerprint: c.fingerprint,
	}, nil
}

// ErrAuditUnavailable means the audit entry could not be written, so the
// operation was not done (HTTP 503).
var ErrAuditUnavailable = errors.New("ca: the audit log cannot be written")

func joinCaps(cs []authz.Capability) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = string(c)
	}
	return strings.Join(s, ",")
}

func randomID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("ca: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// mintToken signs an enrollment token with the provisioner key, the way
// `step ca token` would: iss is the provisioner, aud the CA's sign URL,
// sub the device name, sans its SPIFFE ID.
func (c *CA) mintToken(name, jti string, now time.Time, ttl time.Duration) (string, error) {
	return c.mintTokenAud(name, jti, now, ttl, c.caURL+"/1.0/sign")
}

func (c *CA) mintTokenAud(name, jti string, now time.Time, ttl time.Duration, aud string) (string, error) {
	cl := tokenClaims{
		Claims: jose.Claims{
			ID:        jti,
			Issuer:    provisionerName,
			Subject:   name,
			Audience:  jose.Audience{aud},
			IssuedAt:  jose.NewNumericDate(now),
			NotBefore: jose.NewNumericDate(now),
			Expiry:    jose.NewNumericDate(now.Add(ttl)),
		},
		SANs: []string{c.DeviceID(name)},
	}
	tok, err := jose.Signed(c.signer).Claims(cl).CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("ca: signing token: %w", err)
	}
	return tok, nil
}

// tokenError is a refused token, with a message for the client.
type tokenError struct{ msg string }

func (e *tokenError) Error() string { return "ca: " + e.msg }

// checkToken verifies an enrollment token without consuming it: the
// signature by this CA's provisioner key, the issuer, the audience, the
// validity window (RFC 7519 §4.1.4/§4.1.5 with one minute of leeway), the
// binding of subject and SAN to one device, and that it is the device's
// current token. It returns the device name and the token's jti.
func (c *CA) checkToken(tok string) (name, jti string, err error) {
	if tok == "" || len(tok) > maxTokenLen {
		return "", "", &tokenError{"the enrollment token is missing or too long"}
	}
	jwt, err := jose.ParseSigned(tok)
	if err != nil {
		return "", "", &tokenError{"the enrollment token is not a signed JWT"}
	}
	if len(jwt.Headers) != 1 || jwt.Headers[0].KeyID != c.jwk.KeyID {
		return "", "", &tokenError{"the enrollment token was not issued by this hearth"}
	}
	var cl tokenClaims
	if err := jwt.Claims(c.jwk.Public().Key, &cl); err != nil {
		return "", "", &tokenError{"the enrollment token was not issued by this hearth"}
	}
	if err := cl.ValidateWithLeeway(jose.Expected{Issuer: provisionerName, Time: c.now()}, time.Minute); err != nil {
		if errors.Is(err, josejwt.ErrExpired) {
			return "", "", &tokenError{"the enrollment token has expired; ask for a new one (hearth device add)"}
		}
		return "", "", &tokenError{"the enrollment token is not valid: " + jose.TrimPrefix(err).Error()}
	}
	name = cl.Subject
	if !ValidDeviceName(name) || len(cl.SANs) != 1 || cl.SANs[0] != c.DeviceID(name) || cl.ID == "" {
		return "", "", &tokenError{"the enrollment token is not bound to one device"}
	}
	rec, err := c.devices.get(context.Background(), name)
	if err != nil {
		return "", "", err
	}
	if !currentToken(rec, cl.ID) {
		return "", "", errTokenUsed
	}
	return name, cl.ID, nil
}

var errTokenUsed = &tokenError{"the enrollment token was already used or replaced"}

// currentToken reports whether jti is the enrollment token device r may
// still enroll with (constant-time comparison).
func currentToken(r *deviceRecord, jti string) bool {
	return r != nil && !r.Revoked && r.TokenID != "" &&
		subtle.ConstantTimeCompare([]byte(r.TokenID), []byte(jti)) == 1
}

// consumeEnrollToken spends the enrollment token jti of device name: one
// store transaction reads the record, checks that jti is still its token
// and clears it, so of any number of enrollments with one token, on any
// number of replicas, one gets past this (bbolt's single writer; on
// PostgreSQL a SERIALIZABLE transaction, of which concurrent ones commit
// as if one after the other, PostgreSQL 15 manual §13.2.3). The token's
// jti is then spent a second time by smallstep's one-time-token store
// (UseToken, a compare-and-swap from nil in the CA database) when the
// authority authorizes it; `step ca certificate` goes through both as
// well (auditStepAPI). A token spent here whose signing then fails stays
// spent, as smallstep's own would: the device gets a new token.
func (c *CA) consumeEnrollToken(ctx context.Context, name, jti string) error {
	return c.devices.change(ctx, name, func(r *deviceRecord, _ *certIndex) (*deviceRecord, *certIndex, error) {
		if !currentToken(r, jti) {
			return nil, nil, errTokenUsed
		}
		r.TokenID, r.TokenExpires = "", time.Time{}
		return r, nil, nil
	})
}

// undone records that an operation whose success entry was already
// written did not take effect (its store write failed or was refused), so
// that the log never claims what did not happen (OWASP ASVS 5.0 V16.3:
// the log records outcomes truthfully). ref names the entry it corrects.
func (c *CA) undone(ctx context.Context, event, resource, ref string, cause error) {
	err := c.audit.Record(ctx, audit.Event{
		Name: event, Outcome: audit.OutcomeError,
		Principal: principalOf(ctx), Resource: resource, Client: clientOf(ctx),
		Reason: "not done: the store refused the change after it was recorded: " + strings.TrimPrefix(cause.Error(), "ca: "),
		Meta:   map[string]string{"corrects": ref},
	})
	if err != nil {
		c.log.Error().Err(err).Str("event", event).Str("resource", resource).Msg("ca: could not record that a recorded change did not happen")
	}
}
