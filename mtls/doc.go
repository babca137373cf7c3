// Package mtls terminates TLS for the gateway, turns a client certificate or
// a bearer token into an authenticated principal, asks authz about every
// request and forwards the allowed ones to the agent.
//
// # Trust boundary
//
// Everything that arrives on the gateway listener is untrusted until mtls has
// verified it: client certificates against hearth's CA alone (never the system
// roots), bearer tokens through the TokenAuthenticator, and paths through
// normalisation before any route matches.
package mtls

import (
	"context"
	"crypto/x509"
	"errors"

	"github.com/hearth-home/hearth/authz"
)

// ErrUnknownDevice is returned by a DeviceDirectory for a certificate whose
// device does not exist, or that is revoked or superseded.
var ErrUnknownDevice = errors.New("mtls: unknown or revoked device")

// DeviceDirectory maps a verified client certificate to its device record.
// It is called on every request, so that a revocation takes effect at once.
type DeviceDirectory interface {
	// LookupDevice returns the device's name and granted (expanded)
	// capabilities, or ErrUnknownDevice when the device does not exist, is
	// revoked, or the certificate's serial was revoked.
	LookupDevice(ctx context.Context, cert *x509.Certificate) (name string, caps []authz.Capability, err error)
}

// TokenAuthenticator turns a bearer token into a principal (Method token;
// Zone is set by the gateway). It returns ErrInvalidToken for an unknown,
// expired or revoked token.
type TokenAuthenticator interface {
	AuthenticateToken(ctx context.Context, token string) (*authz.Principal, error)
}

// ErrInvalidToken is what a TokenAuthenticator returns for a token that does
// not authenticate anyone.
var ErrInvalidToken = errors.New("mtls: invalid or expired token")

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *authz.Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the authenticated principal of a request, or nil.
func PrincipalFrom(ctx context.Context) *authz.Principal {
	p, _ := ctx.Value(principalKey{}).(*authz.Principal)
	return p
}
