package ca

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-home/hearth/audit"
)

// stepBinary finds the step CLI on PATH or in $(go env GOPATH)/bin. A
// missing binary fails the test: CI installs it (.ci/run).
func stepBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("step"); err == nil {
		return p
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "step")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("the step CLI is not installed; install it with: CGO_ENABLED=0 go install github.com/smallstep/cli/cmd/step@v0.21.0")
	return ""
}

// TestStepCLIInterop drives the real step CLI against hearth's CA
// listener: bootstrap with the fingerprint, a certificate with a
// hearth-minted token, a renewal with that certificate, and a refused
// renewal after the device is revoked on hearth's side.
func TestStepCLIInterop(t *testing.T) {
	step := stepBinary(t)
	tc := newTestCA(t, Config{})
	ctx := context.Background()
	work := t.TempDir()
	run := func(args ...string) (string, error) {
		cmd := exec.Command(step, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "STEPPATH="+filepath.Join(work, "steppath"), "HOME="+work)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("ca", "bootstrap", "--ca-url", tc.api.URL, "--fingerprint", tc.Fingerprint()); err != nil {
		t.Fatalf("step ca bootstrap: %v\n%s", err, out)
	}
	// A wrong fingerprint is refused by step.
	if out, err := run("ca", "bootstrap", "--ca-url", tc.api.URL, "--fingerprint", strings.Repeat("0", 64), "--force"); err == nil {
		t.Errorf("step ca bootstrap with a wrong fingerprint succeeded:\n%s", out)
	}
	if out, err := run("ca", "bootstrap", "--ca-url", tc.api.URL, "--fingerprint", tc.Fingerprint(), "--force"); err != nil {
		t.Fatalf("step ca bootstrap: %v\n%s", err, out)
	}

	tok, err := tc.AddDevice(ctx, "laptop", []string{"system:read"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run("ca", "certificate", "laptop", "laptop.crt", "laptop.key", "--token", tok.Token); err != nil {
		t.Fatalf("step ca certificate: %v\n%s", err, out)
	}
	crt := readCert(t, filepath.Join(work, "laptop.crt"))
	if name, _, err := tc.LookupDevice(ctx, crt); err != nil || name != "laptop" {
		t.Fatalf("LookupDevice(step's certificate) = %q %v", name, err)
	}
	if len(crt.URIs) != 1 || len(crt.DNSNames) != 0 || len(crt.ExtKeyUsage) != 1 || crt.IsCA {
		t.Errorf("step's certificate: URIs %v DNS %v EKU %v IsCA %v", crt.URIs, crt.DNSNames, crt.ExtKeyUsage, crt.IsCA)
	}
	// The token is single-use for step too.
	if out, err := run("ca", "certificate", "laptop", "again.crt", "again.key", "--token", tok.Token); err == nil {
		t.Errorf("second step ca certificate with the same token succeeded:\n%s", out)
	}
	if n := len(tc.audit.named(audit.EventCertIssue, audit.OutcomeSuccess)); n != 1 {
		t.Errorf("%d cert.issue successes audited, want 1", n)
	}

	if out, err := run("ca", "renew", "laptop.crt", "laptop.key", "--force"); err != nil {
		t.Fatalf("step ca renew: %v\n%s", err, out)
	}
	renewed := readCert(t, filepath.Join(work, "laptop.crt"))
	if renewed.SerialNumber.Cmp(crt.SerialNumber) == 0 {
		t.Error("step ca renew did not replace the certificate")
	}
	if _, _, err := tc.LookupDevice(ctx, renewed); err != nil {
		t.Errorf("LookupDevice(renewed by step) = %v", err)
	}
	if n := len(tc.audit.named(audit.EventCertRenew, audit.OutcomeSuccess)); n != 1 {
		t.Errorf("%d cert.renew successes audited, want 1", n)
	}

	// A device revoking its own certificate with step (mTLS, passive
	// revocation) is refused by the gateway's lookup at once.
	tok2, err := tc.AddDevice(ctx, "tv", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run("ca", "certificate", "tv", "tv.crt", "tv.key", "--token", tok2.Token); err != nil {
		t.Fatalf("step ca certificate tv: %v\n%s", err, out)
	}
	tv := readCert(t, filepath.Join(work, "tv.crt"))
	if out, err := run("ca", "revoke", "--cert", "tv.crt", "--key", "tv.key"); err != nil {
		t.Fatalf("step ca revoke: %v\n%s", err, out)
	}
	if _, _, err := tc.LookupDevice(ctx, tv); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("LookupDevice after step ca revoke = %v, want ErrUnknownDevice", err)
	}
	if n := len(tc.audit.named(audit.EventCertRevoke, audit.OutcomeSuccess)); n != 1 {
		t.Errorf("%d cert.revoke successes audited, want 1", n)
	}

	if _, err := tc.RevokeDevice(ctx, "laptop"); err != nil {
		t.Fatal(err)
	}
	if out, err := run("ca", "renew", "laptop.crt", "laptop.key", "--force"); err == nil {
		t.Errorf("step ca renew after revocation succeeded:\n%s", out)
	}
	if n := len(tc.audit.named(audit.EventCertRenew, audit.OutcomeFailure)); n != 1 {
		t.Errorf("%d refused renewals audited, want 1", n)
	}
}
