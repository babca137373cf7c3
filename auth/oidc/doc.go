// Package oidc signs household members in with an identity they already have
// at an OpenID Connect provider (Keycloak, Authelia, authentik, Dex, Google…)
// and hands them hearth's own short-lived token, exactly as a password login
// does.
//
// # Flows
//
//   - Browser: GET /.hearth/v1/auth/oidc/{provider}/login?return=/path starts
//     the authorization-code flow with PKCE S256 (RFC 7636, RFC 9700 §2.1.1);
//     …/callback finishes it.
//   - Headless device: [DeviceLogin] runs the device authorization grant
//     (RFC 8628) against the provider and posts the ID token it obtained to
//     POST …/{provider}/token.
//   - Linking: an already signed-in user opens …/{provider}/link to link an
//     identity to themself; the owner links one with `hearth user link`
//     (POST /.hearth/v1/admin/oidc/links, see [Handler.AdminHandler]).
//
// # Trust boundary
//
// Everything from the browser (query, cookies) and from the provider (the
// token response, the ID token) is untrusted until checked here:
//
//   - state and nonce are random, bound to the browser in a 10-minute,
//     AEAD-sealed, single-use __Host- cookie, and compared in constant time;
//   - the code is exchanged once, with the PKCE verifier;
//   - the ID token is verified with go-oidc against the provider's published
//     JWKS only, with an asymmetric algorithm allowlist (never "none" or
//     HS*), iss equal to the configured issuer, aud containing the client ID
//     (azp equal to it when there are several audiences), exp, and nonce;
//   - the discovered issuer must equal the configured one exactly;
//   - the identity (issuer, sub) maps to a hearth user only through an
//     explicit link; the same sub at another issuer is another identity.
//     Sign-up by verified email only links to an EXISTING user whose
//     address matches, never creates one;
//   - the return path is a same-origin path ([SafeReturn]).
//
// hearth's token is delivered in JSON (Accept: application/json) or in an
// HttpOnly, Secure, SameSite=Strict __Host-hearth_session cookie with a small
// page that continues to the return path; never in a URL.
//
// Every outcome is recorded as auth.login (method oidc) in the audit log
// before the response; if the log cannot be written the request is refused
// with 503 and no session is issued. Logins count toward the same throttle
// as password logins.
package oidc
