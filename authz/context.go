package authz

import (
	"context"
	"errors"
)

// This file holds the vocabulary that the gateway (mtls) and the services
// behind it (ca, auth, the web UI) share: the principal in a request's
// context, the admin socket's principal ID and the errors a device
// directory or a token authenticator returns. It lives next to
// [Principal] so that ca and auth do not import the gateway, which is
// their caller, not their base; the interfaces themselves stay where they
// are consumed (mtls.DeviceDirectory, mtls.TokenAuthenticator).

// ErrUnknownDevice is returned by a device directory for a certificate
// whose device does not exist, or that is revoked or superseded.
var ErrUnknownDevice = errors.New("unknown or revoked device")

// ErrInvalidToken is what a token authenticator returns for a token that
// does not authenticate anyone (unknown, expired or revoked).
var ErrInvalidToken = errors.New("invalid or expired token")

// LocalPrincipalID is the principal of the admin unix socket.
const LocalPrincipalID = "user:local"

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the authenticated principal of a request, or nil.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}
