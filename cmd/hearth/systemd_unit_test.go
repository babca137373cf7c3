package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The systemd unit under scripts/systemd passes `systemd-analyze verify`
// (with ExecStart pointing at the hearth binary the tests built: verify
// checks that the command exists) and `systemd-analyze security` rates its
// sandbox at most 1.5 ("OK"; 10 is an unsandboxed service).
func TestSystemdUnit(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	needPrereq(t, err == nil, "systemd-analyze (apt-get install -y systemd)")
	b, err := os.ReadFile(filepath.Join("..", "..", "scripts", "systemd", "hearth.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=hearth", "\nCapabilityBoundingSet=\n", "User=hearth", "ExecStart=/usr/local/bin/hearth serve"} {
		if !strings.Contains(unit, want) {
			t.Errorf("hearth.service lacks %q", strings.TrimSpace(want))
		}
	}
	p := filepath.Join(t.TempDir(), "hearth.service")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(unit, "/usr/local/bin/hearth", hearthBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", p).CombinedOutput()
	if err != nil || strings.Contains(string(out), "hearth.service") {
		t.Errorf("systemd-analyze verify hearth.service: %v\n%s", err, out)
	}
	out, err = exec.Command(sa, "security", "--offline=true", "--threshold=15", p).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for hearth.service: (\S+ \S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no exposure level: %v\n%s", err, out)
	}
	t.Logf("systemd-analyze security hearth.service: %s", m[1])
	if err != nil {
		t.Errorf("systemd-analyze security --threshold=15: exposure %s is above 1.5: %v", m[1], err)
	}
}
