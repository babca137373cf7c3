package authz

import (
	"strings"
	"testing"
	"time"
)

// A passkey session (multi-factor, phishing resistant) against the
// defaults and against a phishing_resistant requirement.
func TestPhishingResistant(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	def := mustPolicy(t, Config{})
	strict := mustPolicy(t, Config{Requirements: map[string]RequirementConfig{
		string(CapPluginsInstall): {PhishingResistant: true},
	}})
	all := def.All()
	user := func(method Method, zone Zone, mfa, pr bool, age time.Duration) *Principal {
		return &Principal{ID: "user:alice", Kind: KindUser, Caps: all, Method: method, Zone: zone, AuthTime: now.Add(-age), MFA: mfa, PhishingResistant: pr}
	}
	tests := []struct {
		name    string
		pol     *Policy
		p       *Principal
		c       Capability
		allow   bool
		outcome Outcome
		reason  string
	}{
		{"passkey from remote keeps hearth:admin after 15m", def, user(MethodToken, ZoneRemote, true, true, 2*time.Hour), CapHearthAdmin, true, OutcomeAllowed, ""},
		{"password+code from remote loses hearth:admin after 15m", def, user(MethodToken, ZoneRemote, true, false, 20*time.Minute), CapHearthAdmin, false, OutcomeTooOld, "at most 15m0s old"},
		{"passkey bounded at 12h", def, user(MethodToken, ZoneRemote, true, true, 13*time.Hour), CapHearthAdmin, false, OutcomeTooOld, "at most 12h0m0s old"},
		{"passkey from remote installs plugins", def, user(MethodToken, ZoneRemote, true, true, time.Minute), CapPluginsInstall, true, OutcomeAllowed, ""},
		{"requirement refuses a code session", strict, user(MethodToken, ZoneRemote, true, false, time.Minute), CapPluginsInstall, false, OutcomeNeedsPhishingResistant, "phishing-resistant"},
		{"requirement refuses a code session on the lan", strict, user(MethodToken, ZoneLAN, true, false, time.Minute), CapPluginsInstall, false, OutcomeNeedsPhishingResistant, "passkey"},
		{"requirement admits a passkey", strict, user(MethodToken, ZoneRemote, true, true, time.Minute), CapPluginsInstall, true, OutcomeAllowed, ""},
		{"requirement admits a device", strict, &Principal{ID: "device:pi", Kind: KindDevice, Caps: all, Method: MethodDevice, Zone: ZoneRemote}, CapPluginsInstall, true, OutcomeAllowed, ""},
		{"requirement admits local", strict, user(MethodLocal, ZoneLAN, false, false, 0), CapPluginsInstall, true, OutcomeAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.pol.Decide(tt.p, tt.c, now)
			if d.Allow != tt.allow || d.Outcome != tt.outcome {
				t.Fatalf("Decide = %v (outcome %d), want allow=%v outcome %d", d, d.Outcome, tt.allow, tt.outcome)
			}
			if !strings.Contains(d.Reason(), tt.reason) {
				t.Errorf("Reason() = %q, want it to mention %q", d.Reason(), tt.reason)
			}
		})
	}
	if got := strict.Requirement(CapPluginsInstall).String(); got != "phishing-resistant tokens (passkey)" {
		t.Errorf("Requirement.String() = %q", got)
	}
	if _, err := New(Config{Requirements: map[string]RequirementConfig{string(CapStatus): {PhishingResistantMaxAge: "soon"}}}); err == nil {
		t.Errorf("a phishing_resistant_max_age of \"soon\" was accepted")
	}
}
