package oidc

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/hearth-home/hearth/audit"
)

// A captured callback (cookie + state + code) replayed to hearth is
// refused by hearth itself: the state is single-use.
func TestReplayedCallbackRefusedByHearth(t *testing.T) {
	hs := newHarness(t)
	hs.ids.LinkIdentity(context.Background(), "alice", hs.op.issuer, "sub-alice")
	b := hs.browser(t)
	cb := b.login("alice", "alice-pw", "")
	flow := b.cookie(flowCookie).Value
	if resp, body := b.get(cb, "application/json"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first callback: got %d %s", resp.StatusCode, body)
	}
	setCookie(b, flowCookie, flow) // the attacker kept a copy of the cookie
	calls := hs.op.tokenCalls.Load()
	resp, body := b.get(cb, "application/json")
	if resp.StatusCode != http.StatusBadRequest || errorCode(t, body) != "replayed" {
		t.Fatalf("replayed callback: got %d %s, want 400 replayed", resp.StatusCode, body)
	}
	if hs.op.tokenCalls.Load() != calls {
		t.Errorf("hearth exchanged a replayed code")
	}
	if n := len(hs.sessions.issued()); n != 1 {
		t.Errorf("sessions issued = %d, want 1", n)
	}
}

// A code already exchanged, presented again with a fresh state of the same
// browser, is refused by the provider (RFC 6749 §4.1.2: single use), and
// hearth reports the refusal.
func TestReplayedCodeRefusedByProvider(t *testing.T) {
	hs := newHarness(t)
	hs.ids.LinkIdentity(context.Background(), "alice", hs.op.issuer, "sub-alice")
	b := hs.browser(t)
	first := b.login("alice", "alice-pw", "")
	if resp, body := b.get(first, "application/json"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first callback: got %d %s", resp.StatusCode, body)
	}
	second := b.login("alice", "alice-pw", "")
	replay := replaceParam(t, second, "code", param(t, first, "code"))
	resp, body := b.get(replay, "application/json")
	if resp.StatusCode != http.StatusUnauthorized || errorCode(t, body) != "code_refused" {
		t.Fatalf("replayed code: got %d %s, want 401 code_refused", resp.StatusCode, body)
	}
	if ev := hs.audit.last(t); ev.Outcome != audit.OutcomeFailure || !strings.HasPrefix(ev.Reason, "code exchange refused: invalid_grant") {
		t.Errorf("audit = %+v, want a code exchange refusal", ev)
	}
}

// An attacker who intercepted the code but not the PKCE verifier cannot
// redeem it: the provider refuses an exchange without or with a wrong
// code_verifier, because hearth always sends an S256 challenge.
func TestMissingPKCERefusedByProvider(t *testing.T) {
	hs := newHarness(t)
	b := hs.browser(t)
	for _, tc := range []struct {
		name     string
		opts     []oauth2.AuthCodeOption
		wantCode string
	}{
		{"no verifier", nil, "invalid_request"},
		{"wrong verifier", []oauth2.AuthCodeOption{oauth2.VerifierOption(strings.Repeat("a", 43))}, "invalid_grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cb := b.login("alice", "alice-pw", "")
			cfg := oauth2.Config{ClientID: testClientID, ClientSecret: testClientSecret,
				Endpoint:    oauth2.Endpoint{TokenURL: hs.op.issuer + "/oauth/token"},
				RedirectURL: hs.base + PathPrefix + "test/callback"}
			ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: hs.tr})
			_, err := cfg.Exchange(ctx, param(t, cb, "code"), tc.opts...)
			var re *oauth2.RetrieveError
			if err == nil || !asRetrieve(err, &re) || re.ErrorCode != tc.wantCode {
				t.Fatalf("exchange %s: err = %v, want the provider's %s", tc.name, err, tc.wantCode)
			}
		})
	}
}

func asRetrieve(err error, re **oauth2.RetrieveError) bool {
	r, ok := err.(*oauth2.RetrieveError)
	*re = r
	return ok
}

func TestLoginRefusesOpenRedirects(t *testing.T) {
	hs := newHarness(t)
	b := hs.browser(t)
	for _, ret := range []string{"//evil.example", `/\evil.example`, "/%2F%2Fevil.example", "https://evil.example/", "javascript:alert(1)", "/a\r\nX: y"} {
		resp, body := b.get(hs.base+PathPrefix+"test/login?return="+url.QueryEscape(ret), "")
		if resp.StatusCode != http.StatusBadRequest || errorCode(t, body) != "bad_return" {
			t.Errorf("login with return %q: got %d %s, want 400 bad_return", ret, resp.StatusCode, body)
		}
	}
	hs.op.storage.mu.Lock()
	n := len(hs.op.storage.reqs)
	hs.op.storage.mu.Unlock()
	if n != 0 {
		t.Errorf("the provider saw %d authorization requests, want 0", n)
	}
}

func TestThrottleAndAuditFailClosed(t *testing.T) {
	hs := newHarness(t)
	hs.ids.LinkIdentity(context.Background(), "alice", hs.op.issuer, "sub-alice")

	t.Run("starting a login is not throttled", func(t *testing.T) {
		hs.throttle.setDeny(true)
		defer hs.throttle.setDeny(false)
		resp, body := hs.browser(t).get(hs.base+PathPrefix+"test/login", "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d %s, want the provider's login page", resp.StatusCode, body)
		}
	})
	t.Run("throttled at callback", func(t *testing.T) {
		b := hs.browser(t)
		cb := b.login("alice", "alice-pw", "")
		hs.throttle.setDeny(true)
		defer hs.throttle.setDeny(false)
		calls := hs.op.tokenCalls.Load()
		resp, _ := b.get(cb, "")
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "30" {
			t.Fatalf("got %d (Retry-After %q), want 429 with Retry-After 30", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if hs.op.tokenCalls.Load() != calls {
			t.Errorf("a throttled callback exchanged its code")
		}
	})
	t.Run("failures are counted", func(t *testing.T) {
		n := hs.throttle.failureCount()
		b := hs.browser(t)
		cb := b.login("carol", "carol-pw", "") // not linked
		if resp, _ := b.get(cb, ""); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("got %d, want 403", resp.StatusCode)
		}
		if got := hs.throttle.failureCount(); got != n+1 {
			t.Fatalf("throttle failures = %d, want %d", got, n+1)
		}
	})
	t.Run("audit unavailable", func(t *testing.T) {
		b := hs.browser(t)
		cb := b.login("alice", "alice-pw", "")
		hs.audit.fail.Store(true)
		defer hs.audit.fail.Store(false)
		n := len(hs.sessions.issued())
		resp, body := b.get(cb, "")
		if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, body) != "unavailable" {
			t.Fatalf("got %d %s, want 503 unavailable", resp.StatusCode, body)
		}
		if len(hs.sessions.issued()) != n {
			t.Fatalf("a session was issued although the audit log could not record the login")
		}
		for _, c := range resp.Cookies() {
			if c.Name == SessionCookie {
				t.Fatalf("a session cookie was set")
			}
		}
	})
	t.Run("store unavailable", func(t *testing.T) {
		b := hs.browser(t)
		cb := b.login("alice", "alice-pw", "")
		hs.ids.setFailed(true)
		defer hs.ids.setFailed(false)
		if resp, _ := b.get(cb, ""); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("got %d, want 503", resp.StatusCode)
		}
	})
}

// The same sub at another issuer is another identity.
func TestSameSubjectOtherIssuer(t *testing.T) {
	hs := newHarness(t)
	other := startOP(t, hs.base+PathPrefix+"test/callback")
	// alice is linked at the other provider only, under the same sub.
	hs.ids.LinkIdentity(context.Background(), "alice", other.issuer, "sub-alice")
	b := hs.browser(t)
	resp, body := b.get(b.login("alice", "alice-pw", ""), "")
	if resp.StatusCode != http.StatusForbidden || errorCode(t, body) != "unlinked_identity" {
		t.Fatalf("got %d %s, want 403 unlinked_identity", resp.StatusCode, body)
	}
	if !strings.Contains(body, "hearth user link NAME --provider test --subject sub-alice") {
		t.Errorf("refusal does not tell how to link: %s", body)
	}
	if ev := hs.audit.last(t); ev.Meta["subject"] != "sub-alice" || ev.Meta["issuer"] != hs.op.issuer || ev.Principal != "" {
		t.Errorf("audit = %+v, want the subject and issuer, no principal", ev)
	}
}

func TestSignUpByVerifiedEmail(t *testing.T) {
	hs := newHarness(t, func(p *Provider) { p.SignUp = SignUp{Domains: []string{"example.org"}} })
	tests := []struct {
		name, user string
		status     int
		linkedTo   string
	}{
		// alice@example.org is verified and belongs to hearth user alice.
		{"verified and listed", "alice", 200, "alice"},
		// bob's address is not verified at the provider.
		{"not verified", "bob", 403, ""},
		// carol is verified but no hearth user has her address: no user is created.
		{"no such user", "carol", 403, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := hs.browser(t)
			resp, body := b.get(b.login(tc.user, tc.user+"-pw", ""), "application/json")
			if resp.StatusCode != tc.status {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			if got := hs.ids.linked(hs.op.issuer, "sub-"+tc.user); got != tc.linkedTo {
				t.Fatalf("link = %q, want %q", got, tc.linkedTo)
			}
		})
	}
	var linkEv bool
	for _, e := range hs.audit.all() {
		if e.Name == audit.EventUserChange && e.Meta["action"] == "link_identity" && e.Principal == "user:alice" {
			linkEv = true
		}
	}
	if !linkEv {
		t.Errorf("no user.change audit entry for the sign-up link")
	}
}

func TestLinkFromWebPage(t *testing.T) {
	hs := newHarness(t)
	b := hs.browser(t)
	if resp, _ := b.get(hs.base+PathPrefix+"test/link", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("link while signed out: got %d, want 401", resp.StatusCode)
	}
	user := "carol-h"
	hs.signedIn.Store(&user)
	for _, hdr := range [][2]string{{"Sec-Fetch-Site", "cross-site"}, {"Sec-Fetch-Site", "same-site"}, {"Origin", "https://evil.example"}} {
		req, _ := http.NewRequest(http.MethodGet, hs.base+PathPrefix+"test/link", nil)
		req.Header.Set(hdr[0], hdr[1])
		resp, err := b.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("link started with %s: %s: got %d, want 403", hdr[0], hdr[1], resp.StatusCode)
		}
	}
	cb := b.signIn(b.start("link", "/settings"), "carol", "carol-pw")
	// The provider's cross-site redirect back carries no Strict session
	// cookie: the sealed flow cookie alone names the user.
	hs.signedIn.Store(nil)
	resp, body := b.get(cb, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "linked to carol-h") {
		t.Fatalf("link callback: got %d %s", resp.StatusCode, body)
	}
	if got := hs.ids.linked(hs.op.issuer, "sub-carol"); got != "carol-h" {
		t.Fatalf("link = %q, want carol-h", got)
	}
	if len(hs.sessions.issued()) != 0 {
		t.Errorf("linking issued a session")
	}
	resp, body = b.get(b.login("carol", "carol-pw", ""), "application/json")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login after link: got %d %s", resp.StatusCode, body)
	}
	// Another signed-in user cannot take over an identity linked to carol-h.
	alice := "alice"
	hs.signedIn.Store(&alice)
	resp, body = b.get(b.signIn(b.start("link", ""), "carol", "carol-pw"), "")
	if resp.StatusCode != http.StatusConflict || errorCode(t, body) != "already_linked" {
		t.Fatalf("re-link to another user: got %d %s, want 409 already_linked", resp.StatusCode, body)
	}
	// A browser signed in as someone else cannot finish another user's link.
	cb = b.signIn(b.start("link", ""), "bob", "bob-pw") // started as alice
	bob := "bob"
	hs.signedIn.Store(&bob)
	resp, body = b.get(cb, "")
	if resp.StatusCode != http.StatusForbidden || errorCode(t, body) != "wrong_user" {
		t.Fatalf("finishing alice's link as bob: got %d %s, want 403 wrong_user", resp.StatusCode, body)
	}
	if got := hs.ids.linked(hs.op.issuer, "sub-bob"); got != "" {
		t.Fatalf("sub-bob linked to %q", got)
	}
}

func TestAdminLink(t *testing.T) {
	hs := newHarness(t)
	post := func(in LinkRequest) (int, string) {
		bs, _ := json.Marshal(in)
		resp, err := (&http.Client{Transport: hs.tr}).Post(hs.base+AdminPath, "application/json", strings.NewReader(string(bs)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out json.RawMessage
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, string(out)
	}
	tests := []struct {
		name   string
		in     LinkRequest
		status int
	}{
		{"link", LinkRequest{"alice", "test", "sub-alice"}, 200},
		{"again, same user", LinkRequest{"alice", "test", "sub-alice"}, 200},
		{"taken by another user", LinkRequest{"bob", "test", "sub-alice"}, 409},
		{"unknown user", LinkRequest{"mallory", "test", "sub-x"}, 404},
		{"unknown provider", LinkRequest{"alice", "nope", "sub-x"}, 400},
		{"empty subject", LinkRequest{"alice", "test", ""}, 400},
		{"subject with space", LinkRequest{"alice", "test", "a b"}, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if st, body := post(tc.in); st != tc.status {
				t.Fatalf("POST %+v: got %d %s, want %d", tc.in, st, body, tc.status)
			}
		})
	}
	if got := hs.ids.linked(hs.op.issuer, "sub-alice"); got != "alice" {
		t.Fatalf("link = %q, want alice", got)
	}
}

func TestDiscovery(t *testing.T) {
	t.Run("issuer must match exactly", func(t *testing.T) {
		hs := newHarness(t, func(p *Provider) { p.Issuer += "/" })
		resp, body := hs.browser(t).get(hs.base+PathPrefix+"test/login", "")
		if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, body) != "provider_unavailable" {
			t.Fatalf("got %d %s, want 503 provider_unavailable", resp.StatusCode, body)
		}
		if !strings.Contains(hs.logs.String(), "did not match the issuer") {
			t.Errorf("log does not explain the mismatch: %s", hs.logs)
		}
	})
	t.Run("lazy, with retry", func(t *testing.T) {
		hs := newHarness(t)
		hs.ids.LinkIdentity(context.Background(), "alice", hs.op.issuer, "sub-alice")
		hs.op.down.Store(true)
		b := hs.browser(t)
		login := hs.base + PathPrefix + "test/login"
		if resp, _ := b.get(login, ""); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("provider down: got %d, want 503", resp.StatusCode)
		}
		hs.op.down.Store(false)
		// Within DiscoveryRetry the failure is remembered, not retried.
		if resp, _ := b.get(login, ""); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("before the retry delay: got %d, want 503", resp.StatusCode)
		}
		hs.clock.Advance(time.Minute)
		if resp, body := b.get(b.login("alice", "alice-pw", ""), "application/json"); resp.StatusCode != http.StatusOK {
			t.Fatalf("after the provider came back: got %d %s", resp.StatusCode, body)
		}
	})
}

func TestProvidersList(t *testing.T) {
	hs := newHarness(t, func(p *Provider) { p.DisplayName = "Test IdP" })
	resp, body := hs.browser(t).get(hs.base+PathPrefix, "")
	var got []providerInfo
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &got) != nil || len(got) != 1 ||
		got[0] != (providerInfo{"test", "Test IdP", PathPrefix + "test/login", true}) {
		t.Fatalf("GET %s = %d %s", PathPrefix, resp.StatusCode, body)
	}
	if resp, _ := hs.browser(t).get(hs.base+PathPrefix+"nope/login", ""); resp.StatusCode != 404 {
		t.Errorf("unknown provider: got %d, want 404", resp.StatusCode)
	}
}

// A provider whose discovery document would weaken the flow is refused:
// PKCE methods without S256, or an endpoint that is not https.
func TestDiscoveryRefusesWeakProviders(t *testing.T) {
	tests := []struct {
		name, want string
		edit       func(doc map[string]any, base string)
	}{
		{"plain PKCE only", "does not support PKCE S256", func(doc map[string]any, base string) {
			doc["code_challenge_methods_supported"] = []string{"plain"}
		}},
		{"http token endpoint", "is not https", func(doc map[string]any, base string) {
			doc["token_endpoint"] = strings.Replace(base, "https://", "http://", 1) + "/token"
		}},
		{"http JWKS", "is not https", func(doc map[string]any, base string) {
			doc["jwks_uri"] = strings.Replace(base, "https://", "http://", 1) + "/keys"
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				base := "https://" + r.Host
				doc := map[string]any{
					"issuer": base, "authorization_endpoint": base + "/authorize", "token_endpoint": base + "/token",
					"jwks_uri": base + "/keys", "response_types_supported": []string{"code"},
					"subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"RS256"},
					"code_challenge_methods_supported": []string{"S256"},
				}
				tc.edit(doc, base)
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(doc)
			}))
			defer srv.Close()
			hs := newHarness(t, func(p *Provider) { p.Issuer = srv.URL })
			resp, body := hs.browser(t).get(hs.base+PathPrefix+"test/login", "")
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("got %d %s, want 503", resp.StatusCode, body)
			}
			if !strings.Contains(hs.logs.String(), tc.want) {
				t.Fatalf("log = %s, want %q", hs.logs, tc.want)
			}
		})
	}
}
