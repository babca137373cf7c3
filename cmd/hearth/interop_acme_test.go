package main

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// needPrereq fails the test under CI (which installs every prerequisite,
// .ci/run) and skips it elsewhere, naming what is missing.
func needPrereq(t *testing.T, ok bool, what string) {
	t.Helper()
	if !ok {
		needTool(t, what)
	}
}

// testNetns creates a network namespace with lo up and its own /etc/hosts
// (ip netns exec bind-mounts /etc/netns/NAME/hosts over /etc/hosts), and
// returns the ip netns exec prefix for commands run inside it. Both are
// removed at cleanup.
func testNetns(t *testing.T, hosts string) []string {
	t.Helper()
	ip, err := exec.LookPath("ip")
	needPrereq(t, err == nil, "the ip command (apt-get install -y iproute2)")
	needPrereq(t, os.Geteuid() == 0, "root, to create a network namespace")
	b := make([]byte, 4)
	rand.Read(b)
	name := "h13-" + hex.EncodeToString(b)
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	etc := filepath.Join("/etc/netns", name)
	t.Cleanup(func() {
		exec.Command(ip, "netns", "del", name).Run()
		os.RemoveAll(etc)
	})
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(ip, "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("bringing lo up in %s: %v\n%s", name, err, out)
	}
	return []string{ip, "netns", "exec", name}
}

// TestInteropCertbot runs Debian's certbot (standalone http-01 on port 80)
// against hearth's ACME directory inside a network namespace where
// web.home.arpa and bank.example.com resolve to loopback: certbot obtains
// and renews a certificate for the household name, trusting hearth's root
// through REQUESTS_CA_BUNDLE; the public name is refused at new-order with
// rejectedIdentifier naming ca.acme_domains, and the refusal is audited.
func TestInteropCertbot(t *testing.T) {
	certbot, err := exec.LookPath("certbot")
	needPrereq(t, err == nil, "certbot (apt-get install -y certbot)")
	ns := testNetns(t, "127.0.0.1 localhost web.home.arpa bank.example.com\n::1 localhost\n")

	dir := filepath.Join(t.TempDir(), "data")
	mustHearth(t, dir, "init", "--owner", "alice")
	srv := startServeWith(t, ns, dir, "http://127.0.0.1:1")
	directory := "https://localhost:" + srv.ca[strings.LastIndexByte(srv.ca, ':')+1:] + "/acme/acme/directory"

	cb := t.TempDir()
	run := func(args ...string) (string, error) {
		t.Helper()
		full := append(append([]string(nil), ns...), "env", "REQUESTS_CA_BUNDLE="+filepath.Join(dir, "ca", "root_ca.crt"), certbot)
		full = append(full, args...)
		full = append(full, "--non-interactive", "--config-dir", filepath.Join(cb, "config"), "--work-dir", filepath.Join(cb, "work"), "--logs-dir", filepath.Join(cb, "logs"))
		out, err := exec.Command(full[0], full[1:]...).CombinedOutput()
		return string(out), err
	}
	obtain := func(name string) (string, error) {
		return run("certonly", "--standalone", "--server", directory, "--agree-tos", "--register-unsafely-without-email", "-d", name)
	}
	if out, err := obtain("web.home.arpa"); err != nil {
		t.Fatalf("certbot certonly -d web.home.arpa: %v\n%s\nserve stderr:\n%s", err, out, srv.stderr.String())
	}
	certPath := filepath.Join(cb, "config", "live", "web.home.arpa", "cert.pem")
	first := readPEMCert(t, certPath)
	if len(first.DNSNames) != 1 || first.DNSNames[0] != "web.home.arpa" {
		t.Errorf("certificate names %v, want [web.home.arpa]", first.DNSNames)
	}
	if out, err := run("renew", "--force-renewal", "--no-random-sleep-on-renew"); err != nil {
		t.Fatalf("certbot renew: %v\n%s", err, out)
	}
	renewed := readPEMCert(t, certPath)
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("certbot renew kept the same certificate")
	}

	out, err := obtain("bank.example.com")
	if err == nil {
		t.Fatalf("certbot obtained a certificate for bank.example.com:\n%s", out)
	}
	// Debian 12's certbot 2.1.0 under Python 3.11 prints "AttributeError:
	// can't set attribute" for any ACME error (its immutable
	// acme.messages.Error meets contextlib setting __traceback__); the
	// problem document it received is in its log either way.
	log, _ := os.ReadFile(filepath.Join(cb, "logs", "letsencrypt.log"))
	if answer := out + string(log); !strings.Contains(answer, "urn:ietf:params:acme:error:rejectedIdentifier") || !strings.Contains(answer, "ca.acme_domains") {
		t.Errorf("certbot's refusal for bank.example.com does not say rejectedIdentifier and ca.acme_domains:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(cb, "config", "live", "bank.example.com")); err == nil {
		t.Error("certbot stored a certificate for bank.example.com")
	}
	got := mustHearth(t, dir, "audit", "tail", "--event", "cert.issue", "--json")
	var found bool
	for _, line := range strings.Split(got, "\n") {
		if strings.Contains(line, `"resource":"acme:new-order"`) && strings.Contains(line, "bank.example.com") && strings.Contains(line, `"outcome":"failure"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no audited new-order refusal for bank.example.com in:\n%s", got)
	}
}
