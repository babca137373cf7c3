//go:build unix

package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"net/http"
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
func toolBinary(t *testing.T, name, install string) string {
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

// litewitness runs torchwood's litewitness on loopback with a fresh key
// held by its own ssh-agent, knowing the log with verifier key vkey. It
// returns the witness's URL and cosignature verifier key.
func litewitness(t *testing.T, origin, vkey string) (string, string) {
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

// TestLitewitnessInterop: torchwood's litewitness (tlog-witness) cosigns
// hearth's checkpoints as the log pushes them; verify --witness accepts
// the cosignature; a rewritten log, same key, other history, is refused
// by the witness and reported by hearth, and verify --witness fails it.
func TestLitewitnessInterop(t *testing.T) {
	dir := newTestDir(t)
	vkey := func() string {
		l := openTest(t, dir, Config{}, Options{})
		defer l.Close()
		return l.VerifierKey()
	}()
	origin := strings.SplitN(vkey, "+", 2)[0]
	url, wkey := litewitness(t, origin, vkey)
	cfg := Config{Witnesses: []Witness{{URL: url, Key: wkey}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	opts := Options{WitnessInterval: 50 * time.Millisecond, HTTPClient: &http.Client{Timeout: 5 * time.Second}}
	l := openTest(t, dir, cfg, opts)
	waitWitness := func(l *Log, size int64) WitnessStatus {
		t.Helper()
		for i := 0; ; i++ {
			s := l.Witnesses()[0]
			if s.Size >= size || s.Refused {
				return s
			}
			if i > 200 {
				t.Fatalf("the witness did not cosign size %d: %+v", size, s)
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	for i := range 5 {
		mustRecord(t, l, testEvent(i))
	}
	if s := waitWitness(l, l.Size()); s.Error != "" || s.Refused {
		t.Fatalf("first push: %+v", s)
	}
	// Again, from the size the witness has: a consistency proof.
	for i := range 20 {
		mustRecord(t, l, testEvent(10+i))
	}
	size := l.Size()
	if s := waitWitness(l, size); s.Error != "" || s.Lag != 0 {
		t.Fatalf("second push: %+v", s)
	}
	// The served checkpoint carries the cosignature.
	srvMsg := l.cosignedCheckpoint(l.Checkpoint())
	if !strings.Contains(string(srvMsg), "— witness.test/h11 ") {
		t.Errorf("served checkpoint has no cosignature:\n%s", srvMsg)
	}
	l.Close()
	res := mustVerify(t, dir, VerifyOptions{Witnesses: []string{wkey}})
	if len(res.Witnessed) != 1 || res.Witnessed[0].Size != size {
		t.Fatalf("verify --witness: %+v", res.Witnessed)
	}

	// An intruder with the data dir rewrites history under the same key:
	// entry 3 dropped, the rest re-signed.
	recs := entryRecords(t, dir)
	keep := map[string][]byte{}
	for _, f := range []string{SigningKeyFile, VerifierKeyFile, HMACKeyFile} {
		keep[f], _ = os.ReadFile(auditPath(dir, f))
	}
	witnessed, _ := os.ReadDir(auditPath(dir, WitnessesDir))
	saved := map[string][]byte{}
	for _, e := range witnessed {
		saved[e.Name()], _ = os.ReadFile(auditPath(dir, WitnessesDir, e.Name()))
	}
	os.RemoveAll(auditPath(dir))
	os.MkdirAll(auditPath(dir, SegmentsDir), 0o700)
	for f, b := range keep {
		os.WriteFile(auditPath(dir, f), b, 0o600)
	}
	os.WriteFile(auditPath(dir, CheckpointsFile), nil, 0o600)
	os.WriteFile(auditPath(dir, HashesFile), nil, 0o600)
	l = openTest(t, dir, Config{}, Options{})
	for i, r := range recs[1:] {
		if i+1 == 3 {
			continue
		}
		e, err := ParseEntry(r.frame[frameHeader:])
		if err != nil {
			t.Fatal(err)
		}
		mustRecord(t, l, e.Event)
	}
	for i := range 10 { // longer than what the witness saw
		mustRecord(t, l, testEvent(100+i))
	}
	l.Close()
	l = openTest(t, dir, cfg, opts)
	s := waitWitness(l, l.Size()+1)
	var reported []Entry
	for i := 0; i < 200 && len(reported) == 0; i++ {
		reported, _ = l.Tail(1, func(e Entry) bool { return e.Name == EventAuditWitness })
		time.Sleep(10 * time.Millisecond)
	}
	l.Close()
	if len(reported) != 1 || reported[0].Outcome != OutcomeFailure || reported[0].Meta["witness"] != "witness.test/h11" {
		t.Fatalf("no audit.witness entry for the refusal: %+v", reported)
	}
	// 409 (the witness has 27 entries), then the proof from 27 to the
	// rewritten tree, which the witness refuses with 422.
	if !s.Refused || !strings.Contains(s.Error, "does not verify against the tree it has seen") {
		t.Fatalf("the witness accepted a rewritten log: %+v", s)
	}
	t.Logf("hearth reports: %s", s.Error)
	// The owner kept the cosigned checkpoint (or the witness has it):
	// verify --witness fails the rewritten log.
	os.MkdirAll(auditPath(dir, WitnessesDir), 0o700)
	for name, b := range saved {
		os.WriteFile(auditPath(dir, WitnessesDir, name), b, 0o600)
	}
	if res, err := Verify(dir, VerifyOptions{Witnesses: []string{wkey}}); err == nil || res.OK {
		t.Fatal("verify --witness passed a rewritten log")
	} else {
		t.Logf("verify --witness: %v", err)
	}
}
