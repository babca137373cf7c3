package oidc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/hearth-home/hearth/internal/httpx"
)

// deviceTokenMaxAge is how old (by iat) an ID token posted to …/token may
// be. The device flow has no nonce, so freshness and single use stand in
// for it.
const deviceTokenMaxAge = 10 * time.Minute

// clockSkew tolerates a provider whose clock runs a little ahead.
const clockSkew = 2 * time.Minute

// TokenRequest is POST …/{provider}/token: the ID token (and optionally the
// access token, checked against at_hash) that a device obtained from the
// provider through the device authorization grant.
type TokenRequest struct {
	IDToken     string `json:"id_token"`
	AccessToken string `json:"access_token,omitempty"`
}

// serveToken exchanges a device-flow ID token for hearth's session. The ID
// token is verified exactly as in the browser callback (JWKS, algorithm
// allowlist, iss, aud = the device client, exp, azp); instead of a nonce it
// must carry none (so a browser-flow token cannot be replayed here), be
// fresh (iat within 10 minutes) and is accepted once.
func (h *Handler) serveToken(w http.ResponseWriter, r *http.Request) {
	p, ok := h.provider(w, r)
	if !ok {
		return
	}
	if !p.cfg.DeviceFlow {
		httpx.Error(w, http.StatusNotFound, "device_flow_disabled", "the device flow is not enabled for this provider")
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		httpx.Error(w, http.StatusBadRequest, "bad_request", "Content-Type must be application/json")
		return
	}
	client := h.clientAddr(r)
	if retry, ok := h.throttle.Allow(client, ""); !ok {
		httpx.TooMany(w, retry, "too many login attempts; try again later")
		return
	}
	var in TokenRequest
	if !httpx.DecodeJSON(w, r, 32<<10, &in) {
		return
	}
	if in.IDToken == "" {
		httpx.Error(w, http.StatusBadRequest, "bad_request", "id_token is required")
		return
	}
	id, ref := h.deviceToken(r.Context(), p, in)
	if ref != nil {
		h.refuse(w, r, p, "device", id, ref, client)
		return
	}
	h.finishLogin(w, r, p, "device", id, client, "")
}

func (h *Handler) deviceToken(ctx context.Context, p *remote, in TokenRequest) (*identity, *refusal) {
	d, err := p.discover(ctx)
	if err != nil {
		return nil, &refusal{http.StatusServiceUnavailable, "provider_unavailable", "the identity provider cannot be reached; try again shortly", "provider unavailable", err}
	}
	ctx = gooidc.ClientContext(ctx, h.client)
	idt, id, ref := d.verify(ctx, d.deviceVerifier, in.IDToken, p.cfg.deviceAudience())
	if ref != nil {
		return id, ref
	}
	bad := func(reason string) *refusal {
		return &refusal{http.StatusUnauthorized, "invalid_id_token", "the ID token cannot be used to sign in here", reason, nil}
	}
	if idt.Nonce != "" {
		return id, bad("ID token carries a nonce: it was issued to a browser login")
	}
	now := h.now()
	if idt.IssuedAt.IsZero() || now.Sub(idt.IssuedAt) > deviceTokenMaxAge || idt.IssuedAt.Sub(now) > clockSkew {
		return id, bad("ID token is not fresh (iat)")
	}
	if in.AccessToken != "" && idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(in.AccessToken); err != nil {
			return id, bad("ID token at_hash mismatch")
		}
	}
	sum := sha256.Sum256([]byte(in.IDToken))
	fresh, err := h.spent.spend("idt:"+hex.EncodeToString(sum[:]), idt.IssuedAt.Add(deviceTokenMaxAge+clockSkew), now)
	if err != nil {
		return id, &refusal{http.StatusServiceUnavailable, "busy", "too many logins in progress; try again shortly", "single-use memory full", err}
	}
	if !fresh {
		return id, bad("ID token replayed")
	}
	return id, nil
}

// DeviceLoginOptions configure [DeviceLogin].
type DeviceLoginOptions struct {
	// HearthURL is the gateway's base URL, e.g. https://hearth.home.arpa:8443.
	HearthURL string
	// Provider is the provider's name in hearth.yaml.
	Provider string
	// HearthClient talks to hearth; it must trust hearth's root (and may
	// present a client certificate). Required.
	HearthClient *http.Client
	// ProviderClient talks to the provider; default a client with a 30 s
	// timeout and the system roots.
	ProviderClient *http.Client
	// Prompt receives the verification URI and user code for the person.
	// Required.
	Prompt io.Writer
}

// DeviceLogin signs in a headless device (RFC 8628): it asks hearth which
// issuer and client to use, discovers the provider (the issuer must match
// exactly), starts the device authorization, prints where to go and the
// code to enter, polls at the provider's interval until the person has
// approved, and trades the ID token for hearth's session at POST
// …/{provider}/token.
func DeviceLogin(ctx context.Context, o DeviceLoginOptions) (*Session, error) {
	if o.HearthClient == nil || o.Prompt == nil || o.HearthURL == "" || o.Provider == "" {
		return nil, errors.New("oidc: DeviceLogin needs HearthURL, Provider, HearthClient and Prompt")
	}
	pc := o.ProviderClient
	if pc == nil {
		pc = &http.Client{Timeout: 30 * time.Second}
	}
	base := strings.TrimSuffix(o.HearthURL, "/") + PathPrefix + url.PathEscape(o.Provider)
	var info DeviceInfo
	if err := hearthJSON(ctx, o.HearthClient, http.MethodGet, base+"/device", nil, &info); err != nil {
		return nil, err
	}
	pctx := gooidc.ClientContext(ctx, pc)
	prov, err := gooidc.NewProvider(pctx, info.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidc: discovering %s: %w", info.Issuer, err)
	}
	ep := prov.Endpoint()
	if ep.DeviceAuthURL == "" {
		return nil, fmt.Errorf("oidc: provider %s does not advertise a device_authorization_endpoint; use the web login", o.Provider)
	}
	cfg := oauth2.Config{ClientID: info.ClientID, Endpoint: ep, Scopes: info.Scopes}
	da, err := cfg.DeviceAuth(pctx)
	if err != nil {
		return nil, fmt.Errorf("oidc: device authorization: %w", err)
	}
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(o.Prompt, "To sign in, open %s\nand check that it shows the code %s\n", da.VerificationURIComplete, da.UserCode)
	} else {
		fmt.Fprintf(o.Prompt, "To sign in, open %s\nand enter the code %s\n", da.VerificationURI, da.UserCode)
	}
	tok, err := cfg.DeviceAccessToken(pctx, da)
	if err != nil {
		return nil, fmt.Errorf("oidc: waiting for approval: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("oidc: the provider sent no ID token (is the openid scope allowed for this client?)")
	}
	var sess Session
	if err := hearthJSON(ctx, o.HearthClient, http.MethodPost, base+"/token", TokenRequest{IDToken: raw, AccessToken: tok.AccessToken}, &sess); err != nil {
		return nil, err
	}
	return &sess, nil
}

// HTTPError is an error answer from hearth ({"error","code"}).
type HTTPError struct {
	Status  int
	Code    string
	Message string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("oidc: hearth answered %d %s: %s", e.Status, e.Code, e.Message)
}

func hearthJSON(ctx context.Context, c *http.Client, method, u string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("oidc: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("oidc: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("oidc: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("oidc: reading hearth's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Code string }
		_ = json.Unmarshal(b, &e)
		return &HTTPError{Status: resp.StatusCode, Code: e.Code, Message: e.Error}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("oidc: hearth's answer is not the expected JSON: %w", err)
	}
	return nil
}
