package config

import (
	"strings"
	"testing"
)

func TestRenderParses(t *testing.T) {
	b, err := Render(Defaults{Name: "Home", Listen: ":8443", CAListen: ":9443", Upstream: "http://127.0.0.1:18789", TrustDomain: "hearth.home.arpa", TrustedNetworks: []string{"127.0.0.0/8", "::1/128", "192.168.0.0/16"}})
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
	if c.CA.TrustDomain != "hearth.home.arpa" || c.Auth.Argon2.MemoryKiB != 65536 {
		t.Errorf("Parse(Render()) ca=%+v auth=%+v", c.CA, c.Auth)
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
