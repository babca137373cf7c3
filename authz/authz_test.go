package authz

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func mustPolicy(t testing.TB, cfg Config) *Policy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	return p
}

func expand(t testing.TB, p *Policy, names ...string) []Capability {
	t.Helper()
	cs, err := p.Expand(names)
	if err != nil {
		t.Fatalf("Expand(%q) = %v", names, err)
	}
	return cs
}

func TestDecide(t *testing.T) {
	p := mustPolicy(t, Config{
		Capabilities: []string{"calendar:read", "lan:only", "fresh:thing"},
		Requirements: map[string]RequirementConfig{
			"lan:only":    {Zones: []string{"lan"}},
			"fresh:thing": {MaxAge: "10m"},
		},
	})
	read := expand(t, p, "system:read")
	admin := expand(t, p, "system:admin")
	dev := func(caps []Capability, z Zone) *Principal {
		return &Principal{ID: "device:kitchen-pi", Kind: KindDevice, Caps: caps, Method: MethodDevice, Zone: z, AuthTime: t0}
	}
	tok := func(caps []Capability, z Zone, mfa bool, at time.Time) *Principal {
		return &Principal{ID: "user:alice", Kind: KindUser, Caps: caps, Method: MethodToken, Zone: z, MFA: mfa, AuthTime: at}
	}
	local := &Principal{ID: "user:local", Kind: KindUser, Caps: admin, Method: MethodLocal, Zone: ZoneLAN}

	tests := []struct {
		name    string
		policy  *Policy
		p       *Principal
		c       Capability
		now     time.Time
		want    Outcome
		wantMsg string
	}{
		{"nil policy", nil, dev(read, ZoneLAN), CapStatus, t0, OutcomeNoPolicy, "no authorization policy is loaded"},
		{"zero policy", &Policy{}, dev(read, ZoneLAN), CapStatus, t0, OutcomeNoPolicy, "no authorization policy"},
		{"nil principal", p, nil, CapStatus, t0, OutcomeEmptyPrincipal, "no authenticated principal for status"},
		{"empty principal", p, &Principal{}, CapStatus, t0, OutcomeEmptyPrincipal, "no authenticated principal"},
		{"bad kind", p, &Principal{ID: "robot:x", Kind: "robot", Method: MethodDevice, Zone: ZoneLAN, Caps: read}, CapStatus, t0, OutcomeBadPrincipal, "not a well-formed principal"},
		{"id kind mismatch", p, &Principal{ID: "user:x", Kind: KindDevice, Method: MethodDevice, Zone: ZoneLAN, Caps: read}, CapStatus, t0, OutcomeBadPrincipal, "not a well-formed"},
		{"id without name", p, &Principal{ID: "device:", Kind: KindDevice, Method: MethodDevice, Zone: ZoneLAN, Caps: read}, CapStatus, t0, OutcomeBadPrincipal, "not a well-formed"},
		{"bad method", p, &Principal{ID: "user:x", Kind: KindUser, Method: "magic", Zone: ZoneLAN, Caps: read}, CapStatus, t0, OutcomeBadPrincipal, "not a well-formed"},
		{"bad zone", p, &Principal{ID: "user:x", Kind: KindUser, Method: MethodToken, Zone: "", Caps: read}, CapStatus, t0, OutcomeBadPrincipal, "not a well-formed"},
		{"device by token", p, &Principal{ID: "device:x", Kind: KindDevice, Method: MethodToken, Zone: ZoneLAN, Caps: read}, CapStatus, t0, OutcomeBadPrincipal, "not a well-formed"},
		{"unknown capability", p, dev(admin, ZoneLAN), "launch:missiles", t0, OutcomeUnknownCapability, `"launch:missiles" is not a known capability`},
		{"bundle is not a capability", p, dev(admin, ZoneLAN), BundleSystemRead, t0, OutcomeUnknownCapability, "not a known capability"},
		{"empty capability", p, dev(admin, ZoneLAN), "", t0, OutcomeUnknownCapability, "not a known capability"},
		{"read device reads status", p, dev(read, ZoneLAN), CapStatus, t0, OutcomeAllowed, "device:kitchen-pi has status via device from lan"},
		{"read device reads conversations", p, dev(read, ZoneRemote), CapConversationsRead, t0, OutcomeAllowed, "has conversations:read"},
		{"read device lacks plugins", p, dev(read, ZoneLAN), CapPluginsInstall, t0, OutcomeNotGranted, "device:kitchen-pi lacks plugins:install (has conversations:read, status)"},
		{"nothing granted", p, dev(nil, ZoneLAN), CapStatus, t0, OutcomeNotGranted, "lacks status (has nothing)"},
		{"admin device installs plugins", p, dev(admin, ZoneRemote), CapPluginsInstall, t0, OutcomeAllowed, "has plugins:install"},
		{"admin device is hearth admin", p, dev(admin, ZoneLAN), CapHearthAdmin, t0, OutcomeAllowed, "has hearth:admin"},
		{"local is hearth admin", p, local, CapHearthAdmin, t0, OutcomeAllowed, "user:local has hearth:admin via local from lan"},
		{"remote password token: plugins", p, tok(admin, ZoneRemote, false, t0), CapPluginsInstall, t0, OutcomeNeedsMFA, "plugins:install requires a device or local session, this is a token from remote"},
		{"remote password token: settings", p, tok(admin, ZoneRemote, false, t0), CapSettingsModify, t0, OutcomeNeedsMFA, "settings:modify requires a device or local session, this is a token from remote"},
		{"remote mfa token: plugins", p, tok(admin, ZoneRemote, true, t0), CapPluginsInstall, t0, OutcomeAllowed, "has plugins:install via token from remote"},
		{"lan password token: plugins", p, tok(admin, ZoneLAN, false, t0), CapPluginsInstall, t0, OutcomeAllowed, "via token from lan"},
		{"remote password token: status", p, tok(admin, ZoneRemote, false, t0), CapStatus, t0, OutcomeAllowed, "has status"},
		{"remote password token: hearth admin", p, tok(admin, ZoneRemote, false, t0), CapHearthAdmin, t0, OutcomeNeedsMFA, "hearth:admin requires a device or local session or a token with a second factor, this is a token from remote without one"},
		{"lan password token: hearth admin", p, tok(admin, ZoneLAN, false, t0), CapHearthAdmin, t0, OutcomeNeedsMFA, "token from lan without one"},
		{"fresh mfa token: hearth admin", p, tok(admin, ZoneRemote, true, t0), CapHearthAdmin, t0.Add(14 * time.Minute), OutcomeAllowed, "has hearth:admin"},
		{"stale mfa token: hearth admin", p, tok(admin, ZoneRemote, true, t0), CapHearthAdmin, t0.Add(16 * time.Minute), OutcomeTooOld, "hearth:admin requires an authentication at most 15m0s old, this one is 16m0s old"},
		{"token without auth time", p, tok(admin, ZoneLAN, true, time.Time{}), CapHearthAdmin, t0, OutcomeTooOld, "has no authentication time"},
		{"token from the future", p, tok(admin, ZoneLAN, true, t0.Add(time.Hour)), CapHearthAdmin, t0, OutcomeTooOld, "in the future"},
		{"old device is not bounded by max_age", p, dev(admin, ZoneLAN), "fresh:thing", t0.Add(24 * time.Hour), OutcomeAllowed, "has fresh:thing"},
		{"old token is", p, tok(admin, ZoneLAN, true, t0), "fresh:thing", t0.Add(11 * time.Minute), OutcomeTooOld, "at most 10m0s old"},
		{"zone requirement met", p, dev(admin, ZoneLAN), "lan:only", t0, OutcomeAllowed, "has lan:only"},
		{"zone requirement unmet", p, dev(admin, ZoneRemote), "lan:only", t0, OutcomeZone, "lan:only requires a request from lan, this is a device from remote"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.policy.Decide(tt.p, tt.c, tt.now)
			if d.Outcome != tt.want {
				t.Errorf("Decide = %v (%s), want outcome %v", d.Outcome, d.Reason(), tt.want)
			}
			if d.Allow != (tt.want == OutcomeAllowed) {
				t.Errorf("Decide.Allow = %v, want %v", d.Allow, tt.want == OutcomeAllowed)
			}
			if !strings.Contains(d.Reason(), tt.wantMsg) {
				t.Errorf("Reason() = %q, want it to contain %q", d.Reason(), tt.wantMsg)
			}
			if d.Capability != tt.c {
				t.Errorf("Capability = %q, want %q", d.Capability, tt.c)
			}
			if !strings.HasPrefix(d.String(), d.Verdict()+": ") {
				t.Errorf("String() = %q, want prefix %q", d.String(), d.Verdict())
			}
		})
	}
}

func TestMethodRequirement(t *testing.T) {
	p := mustPolicy(t, Config{Requirements: map[string]RequirementConfig{
		"plugins:install": {Methods: []string{"device", "local"}},
	}})
	admin := expand(t, p, "system:admin")
	tok := &Principal{ID: "user:alice", Kind: KindUser, Caps: admin, Method: MethodToken, Zone: ZoneRemote, MFA: true, AuthTime: t0}
	d := p.Decide(tok, CapPluginsInstall, t0)
	if d.Allow || d.Outcome != OutcomeMethod {
		t.Fatalf("Decide = %v, want OutcomeMethod", d)
	}
	if want := "plugins:install requires a device or local session, this is a token from remote"; d.Reason() != want {
		t.Errorf("Reason() = %q, want %q", d.Reason(), want)
	}
	dev := &Principal{ID: "device:pi", Kind: KindDevice, Caps: admin, Method: MethodDevice, Zone: ZoneRemote}
	if d := p.Decide(dev, CapPluginsInstall, t0); !d.Allow {
		t.Errorf("Decide(device) = %v, want allow", d)
	}
}

func TestExpand(t *testing.T) {
	p := mustPolicy(t, Config{
		Capabilities: []string{"calendar:read"},
		Bundles:      map[string][]string{"family": {"system:read", "calendar:read"}},
	})
	tests := []struct {
		name    string
		in      []string
		want    []Capability
		wantErr bool
	}{
		{"read bundle", []string{"system:read"}, []Capability{CapConversationsRead, CapStatus}, false},
		{"write bundle", []string{"system:write"}, []Capability{CapPluginsInstall, CapSettingsModify}, false},
		{"admin is everything", []string{"system:admin"}, []Capability{"calendar:read", CapConversationsRead, CapHearthAdmin, CapPluginsInstall, CapSettingsModify, CapStatus}, false},
		{"nested bundle", []string{"family"}, []Capability{"calendar:read", CapConversationsRead, CapStatus}, false},
		{"dedupe and spaces", []string{" status", "system:read", ""}, []Capability{CapConversationsRead, CapStatus}, false},
		{"unknown", []string{"status", "sytem:read"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Expand(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Expand(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Expand(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	if !slices.Equal(p.All(), expand(t, p, "system:admin")) {
		t.Errorf("All() = %q, want system:admin's expansion", p.All())
	}
	if !p.Known(CapStatus) || p.Known(BundleSystemRead) || (*Policy)(nil).Known(CapStatus) {
		t.Errorf("Known() is wrong for status / system:read / nil policy")
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"uppercase capability", Config{Capabilities: []string{"Status:Read"}}},
		{"empty capability", Config{Capabilities: []string{""}}},
		{"bundle of unknown", Config{Bundles: map[string][]string{"x:y": {"nope:nope"}}}},
		{"bundle named like a capability", Config{Bundles: map[string][]string{"status": {"status"}}}},
		{"bundle cycle", Config{Bundles: map[string][]string{"a:a": {"b:b"}, "b:b": {"a:a"}}}},
		{"bundle bad name", Config{Bundles: map[string][]string{"A B": {"status"}}}},
		{"requirement for unknown", Config{Requirements: map[string]RequirementConfig{"nope:nope": {}}}},
		{"requirement bad method", Config{Requirements: map[string]RequirementConfig{"status": {Methods: []string{"carrier-pigeon"}}}}},
		{"requirement bad zone", Config{Requirements: map[string]RequirementConfig{"status": {Zones: []string{"moon"}}}}},
		{"requirement bad age", Config{Requirements: map[string]RequirementConfig{"status": {MaxAge: "soon"}}}},
		{"requirement negative age", Config{Requirements: map[string]RequirementConfig{"status": {MaxAge: "-5m"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.cfg)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("New(%+v) = %v, %v; want ErrConfig", tt.cfg, p, err)
			}
		})
	}
}

func TestRequirementString(t *testing.T) {
	p := mustPolicy(t, Config{})
	tests := []struct {
		c    Capability
		want string
	}{
		{CapStatus, "none"},
		{CapPluginsInstall, "a second factor for tokens from remote"},
		{CapHearthAdmin, "a second factor for tokens; tokens at most 15m0s old; passkey tokens at most 12h0m0s old"},
	}
	for _, tt := range tests {
		if got := p.Requirement(tt.c).String(); got != tt.want {
			t.Errorf("Requirement(%s).String() = %q, want %q", tt.c, got, tt.want)
		}
	}
	r := Requirement{Methods: []Method{MethodDevice, MethodLocal}, Zones: []Zone{ZoneLAN}}
	if got, want := r.String(), "methods device or local; zones lan"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestDefaultsCanBeReplaced(t *testing.T) {
	// Operators may loosen a default deliberately; an entry replaces the
	// default of its capability as a whole.
	p := mustPolicy(t, Config{Requirements: map[string]RequirementConfig{"plugins:install": {}}})
	admin := expand(t, p, "system:admin")
	tok := &Principal{ID: "user:alice", Kind: KindUser, Caps: admin, Method: MethodToken, Zone: ZoneRemote}
	if d := p.Decide(tok, CapPluginsInstall, t0); !d.Allow {
		t.Errorf("Decide = %v, want allow after replacing the default", d)
	}
}

// FuzzNew feeds arbitrary YAML through the authz section's parser and New.
// Whatever New accepts must behave: system:admin is every capability, a
// principal granted nothing is denied everything, and Decide never panics.
func FuzzNew(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("capabilities: [calendar:read]\nbundles:\n  family: [system:read, calendar:read]\n"))
	f.Add([]byte("requirements:\n  status: {methods: [device, local], zones: [lan], max_age: 5m, mfa: true}\n"))
	f.Add([]byte("bundles:\n  a:a: [b:b]\n  b:b: [a:a]\n"))
	f.Add([]byte("requirements:\n  plugins:install: {max_age: -1s}\n"))
	f.Add([]byte("bundles:\n  system:admin: [status]\n  system:read: []\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var cfg Config
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			return
		}
		p, err := New(cfg)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("New error %v does not wrap ErrConfig", err)
			}
			return
		}
		all := p.All()
		if got := expand(t, p, "system:admin"); !slices.Equal(got, all) {
			t.Fatalf("system:admin = %q, want %q", got, all)
		}
		none := &Principal{ID: "device:x", Kind: KindDevice, Method: MethodDevice, Zone: ZoneLAN}
		adm := &Principal{ID: "user:local", Kind: KindUser, Method: MethodLocal, Zone: ZoneLAN, Caps: all}
		for _, c := range all {
			if d := p.Decide(none, c, t0); d.Allow {
				t.Fatalf("principal with nothing allowed %s", c)
			}
			_ = p.Decide(adm, c, t0).Reason()
		}
		for name := range cfg.Bundles {
			if d := p.Decide(adm, Capability(name), t0); d.Allow && !p.Known(Capability(name)) {
				t.Fatalf("bundle %q allowed as a capability", name)
			}
		}
	})
}

func BenchmarkDecide(b *testing.B) {
	p := mustPolicy(b, Config{})
	admin := expand(b, p, "system:admin")
	read := expand(b, p, "system:read")
	b.Run("allow/device", func(b *testing.B) {
		pr := &Principal{ID: "device:kitchen-pi", Kind: KindDevice, Caps: read, Method: MethodDevice, Zone: ZoneLAN, AuthTime: t0}
		b.ReportAllocs()
		for b.Loop() {
			if !p.Decide(pr, CapConversationsRead, t0).Allow {
				b.Fatal("denied")
			}
		}
	})
	b.Run("allow/token-admin", func(b *testing.B) {
		pr := &Principal{ID: "user:alice", Kind: KindUser, Caps: admin, Method: MethodToken, Zone: ZoneRemote, MFA: true, AuthTime: t0}
		b.ReportAllocs()
		for b.Loop() {
			if !p.Decide(pr, CapHearthAdmin, t0.Add(time.Minute)).Allow {
				b.Fatal("denied")
			}
		}
	})
	b.Run("deny/not-granted", func(b *testing.B) {
		pr := &Principal{ID: "device:kitchen-pi", Kind: KindDevice, Caps: read, Method: MethodDevice, Zone: ZoneLAN, AuthTime: t0}
		b.ReportAllocs()
		for b.Loop() {
			if p.Decide(pr, CapPluginsInstall, t0).Allow {
				b.Fatal("allowed")
			}
		}
	})
	b.Run("deny/needs-mfa", func(b *testing.B) {
		pr := &Principal{ID: "user:alice", Kind: KindUser, Caps: admin, Method: MethodToken, Zone: ZoneRemote, AuthTime: t0}
		b.ReportAllocs()
		for b.Loop() {
			if p.Decide(pr, CapPluginsInstall, t0).Allow {
				b.Fatal("allowed")
			}
		}
	})
	b.Run("deny/reason", func(b *testing.B) {
		// The cost of formatting the reason, paid only when someone asks
		// (audit, an error body, explain).
		pr := &Principal{ID: "device:kitchen-pi", Kind: KindDevice, Caps: read, Method: MethodDevice, Zone: ZoneLAN, AuthTime: t0}
		b.ReportAllocs()
		for b.Loop() {
			_ = p.Decide(pr, CapPluginsInstall, t0).Reason()
		}
	})
}
