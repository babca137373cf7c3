//go:build unix

// Package witnesstest exists for tests only: it runs a real
// c2sp.org/tlog-witness (torchwood's litewitness, with its key in its own
// ssh-agent) on loopback, for the file log's and the PostgreSQL log's
// witness tests.
package witnesstest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/crypto/ssh"
)

// toolBinary finds a tool on PATH or in $(go env GOPATH)/bin. A missing
// tool fails the test: CI installs it (.ci/run).
func toolBinary(t testing.TB, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("%s is not installed; install it with: %s", name, install)
	return ""
}

// Litewitness runs torchwood's litewitness on loopback with a fresh key
// held by its own ssh-agent, knowing the log with verifier key vkey. It
// returns the witness's URL and cosignature verifier key.
func Litewitness(t testing.TB, origin, vkey string) (string, string) {
	t.Helper()
	lw := toolBinary(t, "litewitness", "go install filippo.io/torchwood/cmd/litewitness@v0.9.0")
	ctl := toolBinary(t, "witnessctl", "go install filippo.io/torchwood/cmd/witnessctl@v0.9.0")
	agent := toolBinary(t, "ssh-agent", "apt-get install openssh-client")
	add := toolBinary(t, "ssh-add", "apt-get install openssh-client")
	// Unix socket paths are short: not under t.TempDir().
	wdir, err := os.MkdirTemp("", "h11w")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(wdir) })
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(wdir, "key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(wdir, "s")
	ag := exec.Command(agent, "-D", "-a", sock)
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Process.Kill(); ag.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 100 {
			t.Fatal("ssh-agent did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd := exec.Command(add, keyFile)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, out)
	}
	db := filepath.Join(wdir, "w.db")
	for _, args := range [][]string{
		{"add-log", "-db", db, "-origin", origin},
		{"add-key", "-db", db, "-origin", origin, "-key", vkey},
	} {
		if out, err := exec.Command(ctl, args...).CombinedOutput(); err != nil {
			t.Fatalf("witnessctl %v: %v\n%s", args, err, out)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	name := "witness.test/h11"
	w := exec.Command(lw, "-db", db, "-name", name, "-key", ssh.FingerprintSHA256(sshPub), "-ssh-agent", sock, "-listen", addr)
	var logs strings.Builder
	w.Stdout, w.Stderr = &logs, &logs
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Process.Kill()
		w.Wait()
		if t.Failed() {
			t.Logf("litewitness:\n%s", logs.String())
		}
	})
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatalf("litewitness did not listen on %s:\n%s", addr, logs.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	signer, err := torchwood.NewCosignatureSigner(name, priv)
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + addr, signer.Verifier().String()
}
