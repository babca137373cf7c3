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
//
// # Using it
//
//	g, err := mtls.NewGateway(mtls.GatewayOptions{Policy: p, Devices: ca, Tokens: auth, Audit: log, Routes: cfg.RouteList(), Hearth: mux})
//	srv := g.Server(mtls.ServerTLSConfig(serverCert, hearthRoots))
//	srv.ServeTLS(ln, "", "")
//
// hearth's own API is wrapped with [Gateway.Require] (a capability, decided
// and audited like every gateway request); the admin socket's handler with
// [LocalPrincipal]; [Gateway.APIHandler] serves healthz, whoami and
// authz/check on the socket too.
//
// # Every request
//
//  1. The path is normalised ([NormalizePath]); a malformed one is 400. A
//     token is never read from the URL, and an agent request with one in
//     its query (token=, access_token=) is refused with 400 (RFC 6750 §5.3).
//  2. Authentication, on every request (new, kept-alive or resumed
//     connection alike): a verified client certificate is looked up in the
//     [DeviceDirectory] (so a revocation holds on the next request), else an
//     "Authorization: Bearer" token goes to the [TokenAuthenticator]. The
//     zone is lan when the real peer address is in a trusted network;
//     X-Forwarded-For never changes it.
//  3. Paths under /.hearth/ go to the Hearth handler with the principal
//     (possibly nil) in the context ([authz.PrincipalFrom]).
//  4. Any other path picks its route (exact, else the longest "/*" prefix),
//     the method must be listed (a websocket upgrade is the method
//     WEBSOCKET, which only a route listing it matches), and authz
//     decides. A probe route (Route.Probe) needs no credential and is
//     audited in aggregate, once per route per ProbeAuditEvery. A route
//     may set its own body limit and time to the agent's response headers
//     (Route.MaxBody, Route.Timeout). The decision is recorded
//     in the audit log and the request waits for it: if the log cannot be
//     written the answer is 503 and the agent sees nothing.
//     A remote client (not in a trusted network) whose agent requests keep
//     failing authentication gets 429 with Retry-After once over its budget
//     (GatewayOptions.AnonBurst, AnonRefill; per address, IPv6 per /64),
//     before the audit log is touched: each 401 is one durable entry and
//     the log is fail-closed, so an anonymous flood could otherwise fill
//     the disk and refuse the household (OWASP ASVS 5.0 V2.4.1
//     anti-automation). Anonymous remote requests to hearth's own admin
//     API ([Gateway.Require]) take from the same budget of the same
//     address, so alternating between the two buys nothing. Every decision
//     is still audited (issue 3), the throttled ones in aggregate: one
//     entry per address per 10 s, with meta similar_unrecorded (how many
//     were left out) and retry_after. Credentials are still checked, so an
//     authenticated request is never limited, even from a throttled
//     address; lan clients and the admin socket are exempt.
//  5. Allowed requests are proxied with exactly the normalised path,
//     without hearth's bearer token or any client-supplied address or
//     identity header ([ClientAddressHeaders]: X-Forwarded-*, Forwarded,
//     X-Real-IP, True-Client-IP, CF-Connecting-IP, x-openclaw-*,
//     Tailscale-*, X-Hearth-*, and the agent's scopes header), and with
//     X-Hearth-Principal, X-Hearth-Method, X-Hearth-Capabilities,
//     X-Forwarded-For/-Proto/-Host set by the gateway — plus, with an
//     [Agent] profile, the agent's scopes header (x-openclaw-scopes: the
//     scopes of the capabilities authz allows the principal now) and, for
//     a loopback peer, Agent.LocalClientAddress as X-Forwarded-For.
//
// # Trust boundary with the agent
//
// The agent must be reachable only through hearth: it trusts the identity
// headers of whatever connects to it from hearth's address (for OpenClaw:
// loopback), so a local process that can reach the agent's port directly
// can claim any principal. hearth's guarantees hold for every request that
// arrives on the gateway listener.
//
// Websocket upgrades are authorized like any request; while one is open, or
// a server-sent event stream (a request with "Accept: text/event-stream"),
// its credential and capability are checked again every RecheckInterval,
// and the connection is closed when they no longer hold — a websocket with
// a close frame 1008 and the reason, sent between two of the agent's
// frames. Other responses
// are not watched: a revoked device's next request is refused.
package mtls

import (
	"context"
	"crypto/x509"

	"github.com/hearth-home/hearth/authz"
)

// DeviceDirectory maps a verified client certificate to its device record.
// It is called on every request, so that a revocation takes effect at once.
type DeviceDirectory interface {
	// LookupDevice returns the device's name and granted (expanded)
	// capabilities, or authz.ErrUnknownDevice when the device does not exist, is
	// revoked, or the certificate's serial was revoked (authz.ErrUnknownDevice).
	LookupDevice(ctx context.Context, cert *x509.Certificate) (name string, caps []authz.Capability, err error)
}

// TokenAuthenticator turns a bearer token into a principal (Method token;
// Zone is set by the gateway). It returns authz.ErrInvalidToken for an
// unknown, expired or revoked token.
type TokenAuthenticator interface {
	AuthenticateToken(ctx context.Context, token string) (*authz.Principal, error)
}
