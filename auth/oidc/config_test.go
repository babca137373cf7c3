package oidc

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/hearth-home/hearth/audit"
)

func TestProviderValidate(t *testing.T) {
	ok := Provider{Name: "dex", Issuer: "https://dex.home.arpa/dex", ClientID: "hearth"}
	tests := []struct {
		name    string
		edit    func(p *Provider)
		wantErr string
	}{
		{"minimal", func(p *Provider) {}, ""},
		{"everything", func(p *Provider) {
			p.Scopes = []string{"email", "profile"}
			p.Algorithms = []string{"ES256", "EdDSA"}
			p.SignUp = SignUp{Domains: []string{"example.org"}, Addresses: []string{"gran@example.net"}}
			p.DeviceFlow, p.DeviceClientID = true, "hearth-cli"
		}, ""},
		{"bad name", func(p *Provider) { p.Name = "Dex/x" }, "provider name"},
		{"empty name", func(p *Provider) { p.Name = "" }, "provider name"},
		{"http issuer", func(p *Provider) { p.Issuer = "http://dex.home.arpa" }, "https URL"},
		{"issuer with query", func(p *Provider) { p.Issuer = "https://dex.home.arpa/?x=1" }, "https URL"},
		{"issuer with user", func(p *Provider) { p.Issuer = "https://u@dex.home.arpa/" }, "https URL"},
		{"no client", func(p *Provider) { p.ClientID = "" }, "client_id"},
		{"both secrets", func(p *Provider) { p.ClientSecret, p.ClientSecretFile = "a", "/b" }, "not both"},
		{"alg none", func(p *Provider) { p.Algorithms = []string{"none"} }, "not allowed"},
		{"alg HS256", func(p *Provider) { p.Algorithms = []string{"HS256"} }, "not allowed"},
		{"scope with space", func(p *Provider) { p.Scopes = []string{"a b"} }, "bad scope"},
		{"signup wildcard", func(p *Provider) { p.SignUp.Domains = []string{"*.example.org"} }, "bare domain"},
		{"signup address with name", func(p *Provider) { p.SignUp.Addresses = []string{"Gran <gran@example.net>"} }, "plain email"},
		{"device client without flow", func(p *Provider) { p.DeviceClientID = "x" }, "device_flow is false"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.edit(&p)
			err := p.Validate()
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
	if err := ValidateProviders([]Provider{ok, ok}); err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Errorf("ValidateProviders(duplicate) = %v, want a duplicate-name error", err)
	}
}

func TestSignUpAllows(t *testing.T) {
	s := SignUp{Domains: []string{"example.org"}, Addresses: []string{"Gran@Example.net"}}
	for email, want := range map[string]bool{
		"alice@example.org":          true,
		"ALICE@EXAMPLE.ORG":          true,
		"gran@example.net":           true,
		"other@example.net":          false,
		"alice@sub.example.org":      false,
		"alice@example.org.evil":     false,
		"alice@evilexample.org":      false,
		"example.org":                false,
		"@example.org":               false,
		"a@":                         false,
		"x@evil.example@example.org": true, // the domain part is after the last '@'; the provider verified the address
	} {
		if got := s.Allows(email); got != want {
			t.Errorf("Allows(%q) = %v, want %v", email, got, want)
		}
	}
}

func TestMFAFrom(t *testing.T) {
	tests := []struct {
		name string
		amr  []string
		acr  string
		want bool
	}{
		{"none", nil, "", false},
		{"password", []string{"pwd"}, "", false},
		{"two knowledge factors", []string{"pwd", "pin"}, "", false},
		{"password and otp", []string{"pwd", "otp"}, "", true},
		{"password and key", []string{"pwd", "hwk"}, "", true},
		{"key and fingerprint", []string{"hwk", "fpt"}, "", true},
		{"mfa", []string{"mfa"}, "", true},
		{"configured acr", nil, "gold", true},
		{"other acr", nil, "silver", false},
	}
	for _, tc := range tests {
		if got := mfaFrom(tc.amr, tc.acr, []string{"gold"}); got != tc.want {
			t.Errorf("%s: mfaFrom(%v, %q) = %v, want %v", tc.name, tc.amr, tc.acr, got, tc.want)
		}
	}
}

func TestClientSecretFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	if err := os.WriteFile(path, []byte("  s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	p := Provider{Name: "x", Issuer: "https://x.example", ClientID: "c", ClientSecretFile: path}
	_, err := New([]Provider{p}, Options{Sessions: &memSessions{}, Identities: newIdentities(), Audit: audit.Discard{},
		PublicURL: "https://hearth.example:8443", Logger: zerolog.New(&logs)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if !strings.Contains(logs.String(), "should be 0600") || strings.Contains(logs.String(), "s3cret") {
		t.Errorf("log = %s, want a mode warning without the secret", logs.String())
	}
	got, err := p.secret(nil)
	if err != nil || got != "s3cret" {
		t.Errorf("secret() = %q, %v, want s3cret", got, err)
	}
	p.ClientSecretFile = filepath.Join(dir, "missing")
	if _, err := New([]Provider{p}, Options{Sessions: &memSessions{}, Identities: newIdentities(), Audit: audit.Discard{}, PublicURL: "https://h.example"}); err == nil {
		t.Errorf("New with a missing secret file succeeded")
	}
}

func TestNewRefuses(t *testing.T) {
	p := Provider{Name: "x", Issuer: "https://x.example", ClientID: "c"}
	base := Options{Sessions: &memSessions{}, Identities: newIdentities(), Audit: audit.Discard{}, PublicURL: "https://h.example:8443"}
	tests := []struct {
		name string
		ps   []Provider
		edit func(o *Options)
	}{
		{"no sessions", []Provider{p}, func(o *Options) { o.Sessions = nil }},
		{"no audit", []Provider{p}, func(o *Options) { o.Audit = nil }},
		{"http public URL", []Provider{p}, func(o *Options) { o.PublicURL = "http://h.example" }},
		{"public URL with path", []Provider{p}, func(o *Options) { o.PublicURL = "https://h.example/x" }},
		{"short cookie key", []Provider{p}, func(o *Options) { o.CookieKey = make([]byte, 16) }},
		{"signup without email directory", []Provider{{Name: "x", Issuer: "https://x.example", ClientID: "c", SignUp: SignUp{Domains: []string{"a.example"}}}}, func(o *Options) {}},
		{"invalid provider", []Provider{{Name: "x"}}, func(o *Options) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.edit(&o)
			if _, err := New(tc.ps, o); err == nil {
				t.Fatalf("New succeeded, want an error")
			}
		})
	}
}

func TestSealer(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	s, err := newSealer(key, bytes.NewReader(bytes.Repeat([]byte{1}, 1024)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	st := &flowState{Provider: "p", Purpose: purposeLogin, State: "s", Nonce: "n", Verifier: "v", Return: "/", Expiry: now.Add(time.Minute).Unix()}
	v, err := s.seal(st)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.open(v, now); err != nil || *got != *st {
		t.Fatalf("open(seal(st)) = %+v, %v, want %+v", got, err, st)
	}
	if _, err := s.open(v, now.Add(time.Minute)); err == nil {
		t.Errorf("open accepted an expired state")
	}
	other, _ := newSealer(bytes.Repeat([]byte{8}, 32), bytes.NewReader(make([]byte, 64)))
	if _, err := other.open(v, now); err == nil {
		t.Errorf("open accepted a state sealed with another key")
	}
}

// FuzzOpenCookie: the flow cookie is attacker-controlled bytes; open must
// never panic and never accept anything it did not seal.
func FuzzOpenCookie(f *testing.F) {
	key := bytes.Repeat([]byte{7}, 32)
	s, _ := newSealer(key, bytes.NewReader(bytes.Repeat([]byte{1}, 1<<16)))
	now := time.Unix(1_800_000_000, 0)
	good, _ := s.seal(&flowState{Provider: "p", State: "s", Nonce: "n", Verifier: "v", Expiry: now.Add(time.Minute).Unix()})
	f.Add(good)
	f.Add("")
	f.Add("AAAA")
	f.Add(strings.Repeat("A", 40))
	f.Add(good[:len(good)-1] + "B")
	f.Fuzz(func(t *testing.T, v string) {
		st, err := s.open(v, now)
		if err == nil && v != good {
			t.Fatalf("open accepted %q as %+v", v, st)
		}
	})
}

func TestSpentSet(t *testing.T) {
	var s spentSet
	now := time.Unix(1_800_000_000, 0)
	if ok, _ := s.spend("a", now.Add(time.Minute), now); !ok {
		t.Fatal("first spend refused")
	}
	if ok, _ := s.spend("a", now.Add(time.Minute), now); ok {
		t.Fatal("second spend accepted")
	}
	if ok, _ := s.spend("a", now.Add(2*time.Minute), now.Add(time.Minute)); !ok {
		t.Fatal("spend after expiry refused")
	}
}
