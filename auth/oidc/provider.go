package oidc

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// discoveryTimeout bounds one discovery attempt.
const discoveryTimeout = 15 * time.Second

// remote is one configured provider and, once discovered, its metadata.
type remote struct {
	cfg    Provider
	secret string
	h      *Handler

	mu      sync.Mutex
	d       *discovered
	lastErr error
	lastTry time.Time
}

// discovered is a provider whose discovery document was fetched and checked.
type discovered struct {
	r              *remote
	oauth          oauth2.Config
	verifier       *gooidc.IDTokenVerifier // aud = client_id
	deviceVerifier *gooidc.IDTokenVerifier // aud = device client
}

// scopes are the scopes requested: openid first, then the configured ones.
func (r *remote) scopes() []string {
	out := []string{gooidc.ScopeOpenID}
	for _, s := range r.cfg.Scopes {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// providerMeta holds the discovery fields go-oidc does not check for us.
type providerMeta struct {
	AuthorizationEndpoint         string   `json:"authorization_endpoint"`
	TokenEndpoint                 string   `json:"token_endpoint"`
	JWKSURI                       string   `json:"jwks_uri"`
	DeviceAuthorizationEndpoint   string   `json:"device_authorization_endpoint"`
	CodeChallengeMethodsSupported []string `json:"code_challenge_methods_supported"`
}

// discover returns the provider's checked metadata, fetching it on first
// use. After a failure it waits DiscoveryRetry before trying again, so a
// provider that is down is not hammered, and hearth keeps serving.
func (r *remote) discover(ctx context.Context) (*discovered, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.d != nil {
		return r.d, nil
	}
	now := r.h.now()
	if r.lastErr != nil && now.Sub(r.lastTry) < r.h.opts.DiscoveryRetry {
		return nil, r.lastErr
	}
	r.lastTry = now
	d, err := r.fetch(ctx)
	if err != nil {
		r.lastErr = err
		return nil, err
	}
	r.d, r.lastErr = d, nil
	return d, nil
}

func (r *remote) fetch(ctx context.Context) (*discovered, error) {
	// The attempt outlives the request that triggered it (up to the
	// timeout), so one client giving up does not fail discovery for all.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discoveryTimeout)
	defer cancel()
	// go-oidc refuses a document whose issuer differs from the configured
	// one by a single byte (OpenID Connect Discovery 1.0 §4.3).
	prov, err := gooidc.NewProvider(gooidc.ClientContext(ctx, r.h.client), r.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidc: provider %s: discovery: %w", r.cfg.Name, err)
	}
	var meta providerMeta
	if err := prov.Claims(&meta); err != nil {
		return nil, fmt.Errorf("oidc: provider %s: discovery: %w", r.cfg.Name, err)
	}
	for _, u := range []string{meta.AuthorizationEndpoint, meta.TokenEndpoint, meta.JWKSURI} {
		if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" {
			// The token endpoint receives the client secret and the code;
			// the JWKS decides what is trusted: TLS only (RFC 6749 §3.2).
			return nil, fmt.Errorf("oidc: provider %s: discovery: endpoint %q is not https", r.cfg.Name, u)
		}
	}
	// RFC 7636 §4.2/RFC 9700 §2.1.1: S256 only. A provider that lists its
	// methods and omits S256 would silently drop PKCE, so it is refused.
	if len(meta.CodeChallengeMethodsSupported) > 0 && !slices.Contains(meta.CodeChallengeMethodsSupported, "S256") {
		return nil, fmt.Errorf("oidc: provider %s: does not support PKCE S256 (code_challenge_methods_supported %v)", r.cfg.Name, meta.CodeChallengeMethodsSupported)
	}
	if len(meta.CodeChallengeMethodsSupported) == 0 {
		r.h.log.Warn().Str("provider", r.cfg.Name).Msg("oidc: provider does not advertise code_challenge_methods_supported; sending PKCE S256 anyway")
	}
	d := &discovered{r: r}
	d.oauth = oauth2.Config{
		ClientID:     r.cfg.ClientID,
		ClientSecret: r.secret,
		Endpoint:     prov.Endpoint(),
		RedirectURL:  r.h.publicURL + PathPrefix + r.cfg.Name + "/callback",
		Scopes:       r.scopes(),
	}
	verifierConfig := func(aud string) *gooidc.Config {
		// An explicit allowlist: go-oidc would otherwise accept whatever
		// the provider advertises, which could include HS256.
		return &gooidc.Config{ClientID: aud, SupportedSigningAlgs: r.cfg.algorithms(), Now: r.h.now}
	}
	d.verifier = prov.Verifier(verifierConfig(r.cfg.ClientID))
	d.deviceVerifier = prov.Verifier(verifierConfig(r.cfg.deviceAudience()))
	return d, nil
}

func (d *discovered) authCodeURL(st *flowState) string {
	return d.oauth.AuthCodeURL(st.State, oauth2.S256ChallengeOption(st.Verifier), gooidc.Nonce(st.Nonce))
}

// identity is a verified provider identity, and the user it maps to.
type identity struct {
	issuer, subject string
	email           string
	emailVerified   bool
	mfa             bool
	user            string
}

// exchange trades the code (once; the provider enforces single use) and
// verifies the ID token it yields.
func (d *discovered) exchange(ctx context.Context, code, verifier, nonce string) (*identity, *refusal) {
	ctx = gooidc.ClientContext(ctx, d.r.h.client)
	tok, err := d.oauth.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		reason := "code exchange refused"
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode != "" {
			reason += ": " + truncate(re.ErrorCode, 64)
		}
		return nil, &refusal{http.StatusUnauthorized, "code_refused", "the identity provider refused this login; start again", reason, err}
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, &refusal{http.StatusUnauthorized, "invalid_id_token", "the identity provider sent no ID token", "no id_token in the token response", nil}
	}
	idt, id, ref := d.verify(ctx, d.verifier, raw, d.r.cfg.ClientID)
	if ref != nil {
		return id, ref
	}
	// OIDC Core §3.1.3.7 (11): the nonce we sent must come back.
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return id, &refusal{http.StatusUnauthorized, "invalid_id_token", "the identity provider's answer could not be verified", "ID token nonce mismatch", nil}
	}
	// OIDC Core §3.1.3.8: at_hash, when present, binds the access token.
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return id, &refusal{http.StatusUnauthorized, "invalid_id_token", "the identity provider's answer could not be verified", "ID token at_hash mismatch", err}
		}
	}
	return id, nil
}

// idClaims are the claims read beyond what go-oidc checks.
type idClaims struct {
	Azp           string          `json:"azp"`
	Email         string          `json:"email"`
	EmailVerified json.RawMessage `json:"email_verified"`
	AMR           []string        `json:"amr"`
	ACR           string          `json:"acr"`
}

// verify checks raw with v (signature against the JWKS, algorithm allowlist,
// iss, aud ∋ clientID, exp, nbf) and then azp and sub.
func (d *discovered) verify(ctx context.Context, v *gooidc.IDTokenVerifier, raw, clientID string) (*gooidc.IDToken, *identity, *refusal) {
	bad := func(reason string, err error) *refusal {
		return &refusal{http.StatusUnauthorized, "invalid_id_token", "the identity provider's answer could not be verified", reason, err}
	}
	if len(raw) > 16<<10 {
		return nil, nil, bad("ID token too large", nil)
	}
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, nil, bad("ID token refused: "+truncate(err.Error(), 200), err)
	}
	id := &identity{issuer: idt.Issuer, subject: idt.Subject}
	var c idClaims
	if err := idt.Claims(&c); err != nil {
		return nil, nil, bad("ID token claims unreadable", err)
	}
	// OIDC Core §3.1.3.7 (4)(5): with several audiences azp must be
	// present; when present it must be our client.
	if (len(idt.Audience) > 1 || c.Azp != "") && c.Azp != clientID {
		return nil, nil, bad("ID token azp is not this client", nil)
	}
	if idt.Subject == "" || len(idt.Subject) > 255 {
		return nil, nil, bad("ID token has no valid sub", nil)
	}
	id.email = c.Email
	switch string(c.EmailVerified) {
	case "true", `"true"`:
		id.emailVerified = true
	}
	id.mfa = mfaFrom(c.AMR, c.ACR, d.r.cfg.MFAACRValues)
	return idt, id, nil
}

// RFC 8176 §2 authentication method reference values, by factor kind.
var (
	knowledgeAMR  = []string{"pwd", "pin", "kba"}
	possessionAMR = []string{"otp", "hwk", "swk", "sms", "tel", "sc"}
	inherenceAMR  = []string{"fpt", "face", "iris", "retina", "vbm"}
)

// mfaFrom reports whether the provider says a second factor was used: amr
// holds "mfa", or factors of two different kinds (NIST SP 800-63B §4.2.1),
// or acr is one the configuration names as multi-factor.
func mfaFrom(amr []string, acr string, mfaACR []string) bool {
	if acr != "" && slices.Contains(mfaACR, acr) {
		return true
	}
	kinds := 0
	for _, set := range [][]string{knowledgeAMR, possessionAMR, inherenceAMR} {
		for _, a := range amr {
			if slices.Contains(set, a) {
				kinds++
				break
			}
		}
	}
	return slices.Contains(amr, "mfa") || kinds >= 2
}
