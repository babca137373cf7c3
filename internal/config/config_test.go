package config

import (
	"strings"
	"testing"
)

func TestRenderParses(t *testing.T) {
	b, err := Render(Defaults{Name: "Home", Listen: ":8443", CAListen: ":9443", Upstream: "http://127.0.0.1:18789", TrustDomain: "hearth.home.arpa", TrustedNetworks: []string{"127.0.0.0/8", "::1/128", "192.168.0.0/16"}, Agent: AgentSample})
	if err != nil {
		t.Fatalf("Render() = %v", err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.Gateway.Listen != ":8443" || c.Gateway.Upstream != "http://127.0.0.1:18789" || len(c.Gateway.Routes) != 7 || len(c.Gateway.TrustedNetworks) != 3 {
		t.Errorf("Parse(Render()) = %+v", c.Gateway)
	}
	if c.Gateway.Agent.ScopesHeader != "" {
		t.Errorf("sample profile sends scopes header %q", c.Gateway.Agent.ScopesHeader)
	}
	if c.CA.TrustDomain != "hearth.home.arpa" || c.Auth.Argon2.MemoryKiB != 65536 {
		t.Errorf("Parse(Render()) ca=%+v auth=%+v", c.CA, c.Auth)
	}
}

func TestRenderOpenClaw(t *testing.T) {
	b, err := Render(Defaults{Name: "Home", Listen: ":8443", CAListen: ":9443", Upstream: "http://127.0.0.1:18789", TrustDomain: "hearth.home.arpa", PublicURL: "https://hearth.home.arpa:8443"})
	if err != nil {
		t.Fatalf("Render(openclaw) = %v", err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Gateway.Agent
	if a.Profile != AgentOpenClaw || a.ScopesHeader != "x-openclaw-scopes" || a.LocalClientAddress != "192.0.0.8" || len(a.Scopes["hearth:admin"]) != 2 {
		t.Errorf("agent = %+v", a)
	}
	if c.Gateway.PublicURL != "https://hearth.home.arpa:8443" {
		t.Errorf("public_url = %q", c.Gateway.PublicURL)
	}
	var ws, probes int
	for _, r := range c.Gateway.Routes {
		for _, m := range r.Methods {
			if m == "WEBSOCKET" {
				ws++
			}
		}
		if r.Probe {
			probes++
		}
	}
	if ws != 1 || probes != 5 {
		t.Errorf("routes: %d websocket, %d probes; want 1 and 5", ws, probes)
	}
	if _, err := Render(Defaults{Agent: "hermes"}); err == nil || !strings.Contains(err.Error(), "openclaw") {
		t.Errorf("Render(unknown agent) = %v, want an error naming the known profiles", err)
	}
}

func TestParseRefusesUnknownKeys(t *testing.T) {
	_, err := Parse([]byte("gateway:\n  lisen: \":1\"\n"))
	if err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Errorf("Parse(misspelt key) = %v, want an error naming it", err)
	}
}

func TestParseRefusesOversize(t *testing.T) {
	if _, err := Parse(make([]byte, MaxSize+1)); err == nil {
		t.Error("Parse(oversize) = nil error")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("gateway:\n  listen: \":8443\"\n"))
	f.Add([]byte("authz:\n  bundles:\n    a:b: [status]\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil {
			_ = c.Validate()
		}
	})
}

func TestApplyProfile(t *testing.T) {
	sample, err := Render(Defaults{Name: "Home", Listen: ":8443", CAListen: ":9443", Upstream: "http://127.0.0.1:18789", TrustDomain: "hearth.home.arpa", TrustedNetworks: []string{"192.168.0.0/16"}, Agent: AgentSample})
	if err != nil {
		t.Fatal(err)
	}
	// An owner's own requirement survives; the profile's is added.
	edited := strings.Replace(string(sample), "requirements: {}", "requirements:\n    \"status\": { zones: [lan] }", 1)
	out, err := ApplyProfile([]byte(edited), AgentOpenClaw, "https://hearth.home.arpa:8443")
	if err != nil {
		t.Fatalf("ApplyProfile = %v", err)
	}
	c, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if c.Gateway.Agent.ScopesHeader != "x-openclaw-scopes" || c.Gateway.PublicURL != "https://hearth.home.arpa:8443" || c.Gateway.Routes[0].Path != "/health" {
		t.Errorf("gateway after ApplyProfile = %+v", c.Gateway)
	}
	if c.Gateway.TrustedNetworks[0] != "192.168.0.0/16" || c.Name != "Home" {
		t.Errorf("ApplyProfile lost settings: %+v", c)
	}
	if _, ok := c.Authz.Requirements["status"]; !ok {
		t.Error("ApplyProfile dropped the owner's requirement for status")
	}
	if _, ok := c.Authz.Requirements["agent:write"]; !ok || len(c.Authz.Capabilities) != 1 || len(c.Authz.Bundles["system:write"]) != 4 {
		t.Errorf("authz after ApplyProfile = %+v", c.Authz)
	}
	if !strings.Contains(string(out), "# OpenClaw's surface") {
		t.Error("the profile's comments are not in the file")
	}
	// Applying it twice changes nothing more.
	again, err := ApplyProfile(out, AgentOpenClaw, "")
	if err != nil || string(again) != string(out) {
		t.Errorf("ApplyProfile twice differs (%v):\n%s", err, again)
	}
	// Without a public URL, OpenClaw's side cannot name its origin.
	c.Gateway.PublicURL = ""
	if _, err := OpenClawPatch(c.Gateway); err == nil || !strings.Contains(err.Error(), "public_url") {
		t.Errorf("OpenClawPatch(no public URL) = %v", err)
	}
}
