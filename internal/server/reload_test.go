package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/authz"
	"github.com/hearth-home/hearth/internal/config"
)

// Reload applies bundles, requirements, trusted networks and OIDC
// providers (routes are covered end to end in cmd/hearth), names settings
// that need a restart, refuses a file that does not build with the
// running configuration kept, and records config.change either way.
func TestReloadAppliesEachPart(t *testing.T) {
	dir := initializedDir(t)
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	p := filepath.Join(dir, config.FileName)
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "dex-secret")
	if err := os.WriteFile(secret, []byte("a client secret of some length\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loginPage := func() string {
		w := httptest.NewRecorder()
		s.live.Load().mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/.hearth/ui/login", nil))
		return w.Body.String()
	}

	// Before: no such bundle, status has no requirement, 203.0.113.0/24 is
	// remote, no provider on the login page.
	if _, err := s.ca.AddDevice(ctx, "pi", []string{"home:basic"}, 0, 0); err == nil {
		t.Fatal("AddDevice with an unknown bundle succeeded before the reload")
	}
	if z := s.zoneOf("203.0.113.5:443"); z != authz.ZoneRemote {
		t.Fatalf("zone of 203.0.113.5 before = %s, want remote", z)
	}
	if strings.Contains(loginPage(), "Household Dex") {
		t.Fatal("the login page offers the provider before the reload")
	}

	edited := strings.Replace(string(orig), `  bundles:
`, `  bundles:
    "home:basic": ["status"]
`, 1)
	edited = strings.Replace(edited, `  requirements: {}`, `  requirements:
    "status": { methods: [device, local] }`, 1)
	edited = strings.Replace(edited, `  trusted_networks:
`, `  trusted_networks:
    - "203.0.113.0/24"
`, 1)
	edited = strings.Replace(edited, `  device_lifetime: "720h"`, `  device_lifetime: "168h"`, 1)
	edited += `
oidc:
  - name: dex
    display_name: "Household Dex"
    issuer: "https://dex.home.arpa:5554/dex"
    client_id: "hearth"
    client_secret_file: "` + secret + `"
`
	if err := os.WriteFile(p, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := s.Reload(ctx, authz.LocalPrincipalID, "socket")
	if err != nil {
		t.Fatalf("Reload = %v", err)
	}
	if !res.Changed || !slices.Equal(res.RestartNeeded, []string{"ca"}) {
		t.Errorf("Reload = %+v, want changed with restart_needed [ca]", res)
	}
	if _, err := s.ca.AddDevice(ctx, "pi", []string{"home:basic"}, 0, 0); err != nil {
		t.Errorf("AddDevice with the new bundle after the reload = %v", err)
	}
	if r := s.live.Load().policy.Requirement(authz.CapStatus); !slices.Equal(r.Methods, []authz.Method{authz.MethodDevice, authz.MethodLocal}) {
		t.Errorf("status requirement after the reload = %v, want methods device, local", r)
	}
	if z := s.zoneOf("203.0.113.5:443"); z != authz.ZoneLAN {
		t.Errorf("zone of 203.0.113.5 after the reload = %s, want lan", z)
	}
	if !strings.Contains(loginPage(), "Household Dex") || s.live.Load().oidc == nil {
		t.Error("the login page does not offer the provider after the reload")
	}

	// A provider whose secret file is gone fails to build: refused, kept.
	if err := os.Remove(secret); err != nil {
		t.Fatal(err)
	}
	before := s.live.Load()
	if _, err := s.Reload(ctx, authz.LocalPrincipalID, "signal"); !errors.Is(err, ErrConfigRefused) {
		t.Fatalf("Reload with a missing secret file = %v, want ErrConfigRefused", err)
	}
	if s.live.Load() != before {
		t.Error("a refused reload replaced the running configuration")
	}
	ents, err := s.audit.Tail(10, func(e audit.Entry) bool { return e.Name == audit.EventConfigChange })
	if err != nil || len(ents) != 3 {
		t.Fatalf("config.change entries = %v, %v; want 3", ents, err)
	}
	if e := ents[0]; e.Meta["via"] != "start" || e.Meta["sha256"] != sha256Hex(orig) {
		t.Errorf("the entry at start = %+v, want via start with the file's sha256", e)
	}
	ents = ents[1:]
	if e := ents[0]; e.Outcome != audit.OutcomeSuccess || e.Meta["restart_needed"] != "ca" || e.Meta["sha256"] != res.SHA256 || e.Principal != authz.LocalPrincipalID {
		t.Errorf("the applied reload's entry = %+v", e)
	}
	if e := ents[1]; e.Outcome != audit.OutcomeFailure || e.Meta["via"] != "signal" || !strings.Contains(e.Reason, "kept") {
		t.Errorf("the refused reload's entry = %+v", e)
	}
	if strings.Contains(ents[1].Reason, "a client secret") {
		t.Error("the refused reload's entry carries the client secret")
	}
}
