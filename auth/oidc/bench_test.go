package oidc

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"
)

func BenchmarkSafeReturn(b *testing.B) {
	for b.Loop() {
		SafeReturn("/chat/rooms/kitchen?tab=history&since=2026-11-25")
	}
}

func BenchmarkSealOpen(b *testing.B) {
	s, _ := newSealer(bytes.Repeat([]byte{7}, 32), zeroReader{})
	now := time.Now()
	st := &flowState{Provider: "dex", Purpose: purposeLogin, State: "s3Xw4Yl2m9Qk8Vb7Nc6Xz5Aa4Sd3Fg2Hj1Kl0Pq9Wo", Nonce: "n3Xw4Yl2m9Qk8Vb7Nc6Xz5Aa4Sd3Fg2Hj1Kl0Pq9Wo",
		Verifier: "v3Xw4Yl2m9Qk8Vb7Nc6Xz5Aa4Sd3Fg2Hj1Kl0Pq9Wo", Return: "/chat", Expiry: now.Add(flowLifetime).Unix()}
	for b.Loop() {
		v, _ := s.seal(st)
		if _, err := s.open(v, now); err != nil {
			b.Fatal(err)
		}
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// BenchmarkVerifyIDToken is the ID token check of every OIDC login (RS256
// signature against the cached JWKS, claims, azp) once discovery is done.
func BenchmarkVerifyIDToken(b *testing.B) {
	hs := newHarness(b)
	d, err := hs.h.providers["test"].discover(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	raw := (&idTokenParts{key: providerKey(b), kid: "k1", claims: map[string]any{
		"iss": hs.op.issuer, "sub": "sub-alice", "aud": []string{testClientID}, "azp": testClientID,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "nonce": "n",
	}}).sign()
	ctx := context.Background()
	for b.Loop() {
		if _, _, ref := d.verify(ctx, d.verifier, raw, testClientID); ref != nil {
			b.Fatal(ref.reason)
		}
	}
}

// BenchmarkBrowserLogin is a whole login over loopback TLS: hearth's
// /login, the provider's authorize and login form, hearth's callback
// (code exchange + ID token verification + session).
func BenchmarkBrowserLogin(b *testing.B) {
	hs := newHarness(b)
	hs.ids.LinkIdentity(context.Background(), "alice", hs.op.issuer, "sub-alice")
	br := hs.browser(b)
	for b.Loop() {
		resp, _ := br.get(br.login("alice", "alice-pw", "/"), "application/json")
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("login: %d", resp.StatusCode)
		}
	}
}
