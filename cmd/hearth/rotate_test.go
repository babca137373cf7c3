package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func pemChain(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// TestRotateIntermediate keeps the root key offline after init, rotates the
// intermediate with it, and checks that a device enrolled before still
// reaches the agent, that a new device is issued under the new
// intermediate, that the gateway's certificate is too, and that the log
// (which recorded the rotation) verifies.
func TestRotateIntermediate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var in initOut
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "init", "--owner", "alice", "--json")), &in); err != nil {
		t.Fatal(err)
	}
	// The root key leaves the machine: hearth serves without it.
	offline := filepath.Join(t.TempDir(), "usb", "root_ca.key")
	os.MkdirAll(filepath.Dir(offline), 0o700)
	if err := os.Rename(filepath.Join(dir, "ca", "root_ca.key"), offline); err != nil {
		t.Fatal(err)
	}
	agent, upstream := startAgent(t)
	srv := startServe(t, dir, upstream)
	enroll := func(srv *served, name string) string {
		var tok struct{ Token string }
		if err := json.Unmarshal([]byte(mustHearth(t, dir, "device", "add", name, "--caps", "system:read", "--json")), &tok); err != nil {
			t.Fatal(err)
		}
		devDir := filepath.Join(t.TempDir(), name)
		mustHearth(t, dir, "enroll", "--ca-url", "https://"+srv.gateway, "--fingerprint", in.Fingerprint, "--token", tok.Token, "--out", devDir)
		return devDir
	}
	oldDev := enroll(srv, "old-laptop")
	if _, errOut, err := hearthCmd(t, dir, "", "ca", "rotate-intermediate", "--root-key", offline); err == nil || !strings.Contains(errOut, "stop it first") {
		t.Errorf("rotate while serving: err=%v stderr=%q, want a refusal saying to stop hearth", err, errOut)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	<-srv.exited

	oldInter := pemChain(t, filepath.Join(dir, "ca", "intermediate_ca.crt"))[0]
	if _, errOut, err := hearthCmd(t, dir, "", "ca", "rotate-intermediate"); err == nil || !strings.Contains(errOut, "--root-key") {
		t.Errorf("rotate without the root key: err=%v stderr=%q, want a pointer to --root-key", err, errOut)
	}
	if got := pemChain(t, filepath.Join(dir, "ca", "intermediate_ca.crt"))[0]; !got.Equal(oldInter) {
		t.Fatal("a refused rotation changed the intermediate")
	}
	out := mustHearth(t, dir, "ca", "rotate-intermediate", "--root-key", offline)
	if !strings.Contains(out, "stay valid") {
		t.Errorf("rotate said %q", out)
	}
	newInter := pemChain(t, filepath.Join(dir, "ca", "intermediate_ca.crt"))[0]
	root := pemChain(t, filepath.Join(dir, "ca", "root_ca.crt"))[0]
	if newInter.Equal(oldInter) || newInter.CheckSignatureFrom(root) != nil {
		t.Fatal("the new intermediate is the old one or is not signed by the root")
	}
	if gw := pemChain(t, filepath.Join(dir, "ca", "gateway.crt")); gw[0].CheckSignatureFrom(newInter) != nil {
		t.Error("the gateway certificate is not issued by the new intermediate")
	}

	srv2 := startServe(t, dir, upstream)
	get := func(devDir string) int {
		t.Helper()
		client, _ := deviceClient(t, devDir)
		resp, err := client.Get("https://" + srv2.gateway + "/api/status")
		if err != nil {
			t.Fatalf("GET with %s: %v", filepath.Base(devDir), err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(oldDev); code != http.StatusOK {
		t.Errorf("device enrolled before the rotation: GET /api/status = %d, want 200; serve stderr:\n%s", code, srv2.stderr.String())
	}
	newDev := enroll(srv2, "new-laptop")
	if leaf := pemChain(t, filepath.Join(newDev, "device.crt"))[0]; leaf.CheckSignatureFrom(newInter) != nil {
		t.Error("a device enrolled after the rotation is not issued by the new intermediate")
	}
	if code := get(newDev); code != http.StatusOK {
		t.Errorf("device enrolled after the rotation: GET /api/status = %d, want 200", code)
	}
	if n := len(agent.Seen()); n != 2 {
		t.Errorf("agent saw %d requests, want 2", n)
	}
	if got := mustHearth(t, dir, "audit", "tail", "--event", "ca.rotate_intermediate", "--json"); strings.Count(got, `"outcome":"success"`) != 1 || !strings.Contains(got, `"outcome":"failure"`) {
		t.Errorf("audit entries of the rotation: %q, want the refused and the successful one", got)
	}
	var v struct{ OK bool }
	if err := json.Unmarshal([]byte(mustHearth(t, dir, "audit", "verify", "--json")), &v); err != nil || !v.OK {
		t.Errorf("audit verify after rotation = %+v, %v", v, err)
	}
}
