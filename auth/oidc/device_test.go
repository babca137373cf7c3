package oidc

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// deviceLogin runs DeviceLogin while "the person" approves the user code
// at the provider as user.
func deviceLogin(t *testing.T, hs *harness, user string) (*Session, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prompt := &syncBuffer{}
	approved := make(chan error, 1)
	go func() {
		uc, err := hs.op.storage.waitUserCode(ctx)
		if err == nil {
			err = hs.op.storage.approveDevice(uc, user, user+"-pw")
		}
		approved <- err
	}()
	sess, err := DeviceLogin(ctx, DeviceLoginOptions{
		HearthURL: hs.base, Provider: "test",
		HearthClient: &http.Client{Transport: hs.tr}, ProviderClient: &http.Client{Transport: hs.tr},
		Prompt: prompt,
	})
	if aerr := <-approved; aerr != nil {
		t.Fatalf("approving the device: %v", aerr)
	}
	return sess, prompt.String(), err
}

func TestDeviceLogin(t *testing.T) {
	hs := newHarness(t)
	hs.ids.LinkIdentity(context.Background(), "alice", hs.op.issuer, "sub-alice")
	sess, prompt, err := deviceLogin(t, hs, "alice")
	if err != nil {
		t.Fatalf("DeviceLogin: %v", err)
	}
	if sess.Token != "hearth-token-alice-1" {
		t.Fatalf("session = %+v, want alice's", sess)
	}
	if !strings.Contains(prompt, hs.op.issuer+"/device") || !strings.Contains(prompt, "code") {
		t.Errorf("prompt = %q, want the verification URI and the code", prompt)
	}
	if ev := hs.audit.last(t); ev.Name != audit.EventAuthLogin || ev.Outcome != audit.OutcomeSuccess || ev.Meta["flow"] != "device" || ev.Principal != "user:alice" {
		t.Errorf("audit = %+v, want a device-flow auth.login success", ev)
	}

	t.Run("unlinked", func(t *testing.T) {
		_, _, err := deviceLogin(t, hs, "carol")
		var he *HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusForbidden || he.Code != "unlinked_identity" {
			t.Fatalf("DeviceLogin as carol: err = %v, want 403 unlinked_identity", err)
		}
	})
}

// The …/token endpoint verifies the posted ID token like the callback does
// (signature, alg, iss, aud = the device client, exp) and adds what the
// missing nonce cannot give: freshness and single use.
func TestDeviceTokenRefusals(t *testing.T) {
	hs := newHarness(t)
	hs.ids.LinkIdentity(context.Background(), "alice", hs.op.issuer, "sub-alice")
	key := providerKey(t)
	now := time.Now()
	base := func() *idTokenParts {
		return &idTokenParts{key: key, kid: "k1", claims: map[string]any{
			"iss": hs.op.issuer, "sub": "sub-alice", "aud": []string{testDeviceClientID}, "azp": testDeviceClientID,
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		}}
	}
	with := func(f func(p *idTokenParts)) string {
		p := base()
		f(p)
		return p.sign()
	}
	post := func(tok string) (int, string) {
		resp, err := (&http.Client{Transport: hs.tr}).Post(hs.base+PathPrefix+"test/token", "application/json",
			strings.NewReader(`{"id_token":"`+tok+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	good := base().sign()
	if st, body := post(good); st != http.StatusOK {
		t.Fatalf("a valid device ID token: got %d %s, want 200", st, body)
	}
	tests := []struct {
		name, token, reason string
	}{
		{"replayed", good, "ID token replayed"},
		{"browser client audience", with(func(p *idTokenParts) { p.claims["aud"], p.claims["azp"] = []string{testClientID}, testClientID }), `ID token refused: oidc: expected audience "hearth-device"`},
		{"carries a nonce", with(func(p *idTokenParts) { p.claims["nonce"] = "n" }), "ID token carries a nonce"},
		{"stale", with(func(p *idTokenParts) { p.claims["iat"] = now.Add(-11 * time.Minute).Unix() }), "ID token is not fresh"},
		{"from the future", with(func(p *idTokenParts) { p.claims["iat"] = now.Add(10 * time.Minute).Unix() }), "ID token is not fresh"},
		{"no iat", with(func(p *idTokenParts) { delete(p.claims, "iat") }), "ID token is not fresh"},
		{"expired", with(func(p *idTokenParts) { p.claims["exp"] = now.Add(-time.Second).Unix() }), "ID token refused: oidc: token is expired"},
		{"wrong issuer", with(func(p *idTokenParts) { p.claims["iss"] = "https://evil.example" }), "ID token refused: oidc: id token issued by a different provider"},
		{"alg none", func() string { return base().unsigned() }(), "ID token refused: oidc: malformed jwt"},
		{"HS256 with the public key", func() string { return base().hs256WithPublicKey() }(), "ID token refused: oidc: malformed jwt"},
		{"garbage", "not-a-jwt", "ID token refused: oidc: malformed jwt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, body := post(tc.token)
			if st != http.StatusUnauthorized || errorCode(t, body) != "invalid_id_token" {
				t.Fatalf("got %d %s, want 401 invalid_id_token", st, body)
			}
			if ev := hs.audit.last(t); ev.Outcome != audit.OutcomeFailure || !strings.HasPrefix(ev.Reason, tc.reason) || ev.Meta["flow"] != "device" {
				t.Errorf("audit = %+v, want reason %q", ev, tc.reason)
			}
		})
	}
	t.Run("device flow disabled", func(t *testing.T) {
		hs2 := newHarness(t, func(p *Provider) { p.DeviceFlow, p.DeviceClientID = false, "" })
		resp, err := (&http.Client{Transport: hs2.tr}).Post(hs2.base+PathPrefix+"test/token", "application/json", strings.NewReader(`{"id_token":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("got %d, want 404", resp.StatusCode)
		}
	})
	t.Run("not JSON", func(t *testing.T) {
		resp, err := (&http.Client{Transport: hs.tr}).Post(hs.base+PathPrefix+"test/token", "application/x-www-form-urlencoded", strings.NewReader(`id_token=x`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("got %d, want 400", resp.StatusCode)
		}
	})
}
