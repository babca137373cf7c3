package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
)

func auditTestDir(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	if err := audit.Init(dir); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(dir, audit.Config{}, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		ev := audit.Event{Name: audit.EventAuthLogin, Outcome: audit.OutcomeSuccess, Principal: fmt.Sprintf("user:u%d", i%2), Reason: "password"}
		if err := l.Record(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runAudit(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append(append([]string{"audit"}, args...), "--dir", dir), strings.NewReader(""), &out, &errb)
	return out.String(), err
}

func TestAuditCommands(t *testing.T) {
	dir := auditTestDir(t, 4)

	out, err := runAudit(t, dir, "verify")
	if err != nil || !strings.HasPrefix(out, "ok: 5 entries") {
		t.Fatalf("audit verify = %q, %v; want ok: 5 entries", out, err)
	}
	out, err = runAudit(t, dir, "tail", "-n", "2", "--principal", "user:u1")
	if err != nil || strings.Count(out, "\n") != 2 || strings.Count(out, "user:u1") != 2 {
		t.Errorf("audit tail -n 2 --principal user:u1 = %q, %v", out, err)
	}
	out, err = runAudit(t, dir, "tail", "--json", "--event", "audit.start")
	if err != nil || !strings.HasPrefix(out, `{"index":0,`) {
		t.Errorf("audit tail --json --event audit.start = %q, %v", out, err)
	}
	cp, err := runAudit(t, dir, "checkpoint")
	if err != nil || !strings.HasPrefix(cp, "hearth.home.arpa/audit/") {
		t.Fatalf("audit checkpoint = %q, %v", cp, err)
	}
	cpFile := filepath.Join(t.TempDir(), "cp.txt")
	os.WriteFile(cpFile, []byte(cp), 0o600)
	if out, err := runAudit(t, dir, "verify", "--checkpoint", cpFile); err != nil {
		t.Errorf("audit verify --checkpoint = %q, %v", out, err)
	}

	// A witness whose cosignature the data dir does not hold: verify
	// --witness fails and says why.
	wkey := "witness.example/w+54610131+BO1JKMYo0cLG6ukDOJBZlWEpWSc6XGP5NjbBRhSshzfR"
	out, err = runAudit(t, dir, "verify", "--witness", wkey)
	var wee exitError
	if !errors.As(err, &wee) || wee.code != 1 || !strings.Contains(out, "no checkpoint of this log cosigned by witness witness.example/w") {
		t.Errorf("audit verify --witness without a cosignature = %q, %v", out, err)
	}

	// Tamper with entry 2: verify fails with its index and exit status 1.
	seg := filepath.Join(dir, "audit", "segments", "00000000.seg")
	b, _ := os.ReadFile(seg)
	at := bytes.Index(b, []byte(`{"index":2,`))
	k := at + bytes.Index(b[at:], []byte("user:u1"))
	copy(b[k:], "user:u2")
	os.WriteFile(seg, b, 0o600)
	out, err = runAudit(t, dir, "verify", "--json")
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("audit verify on a tampered log: err = %v, want exit status 1", err)
	}
	var res struct {
		OK            bool   `json:"ok"`
		Entries       int64  `json:"entries"`
		FirstBadIndex *int64 `json:"first_bad_index"`
		Error         string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("verify --json output %q: %v", out, err)
	}
	if res.OK || res.FirstBadIndex == nil || *res.FirstBadIndex != 2 || res.Error == "" {
		t.Errorf("verify --json = %s, want ok false, first_bad_index 2", out)
	}
}

func TestAuditTailFollow(t *testing.T) {
	dir := auditTestDir(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw, _ := os.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"audit", "tail", "-f", "--interval", "10ms", "--dir", dir}, strings.NewReader(""), pw, os.Stderr)
		pw.Close()
	}()
	l, err := audit.Open(dir, audit.Config{}, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Record(ctx, audit.Event{Name: audit.EventDeviceAdd, Outcome: audit.OutcomeSuccess, Resource: "device:kitchen-pi"})
	l.Close()
	buf := make([]byte, 4096)
	var got string
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(got, "device:kitchen-pi") && time.Now().Before(deadline) {
		pr.SetReadDeadline(deadline)
		n, err := pr.Read(buf)
		if err != nil {
			break
		}
		got += string(buf[:n])
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("tail -f: %v", err)
	}
	if !strings.Contains(got, "device.add success device:kitchen-pi") {
		t.Errorf("tail -f printed %q, want the new device.add entry", got)
	}
}

func TestAuditHelp(t *testing.T) {
	for _, c := range []string{"verify", "tail", "checkpoint", "export"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"audit", c, "--help"}, strings.NewReader(""), &out, &out); err != nil || !strings.Contains(out.String(), "Examples:") {
			t.Errorf("audit %s --help = %q, %v; want an Examples section", c, out.String(), err)
		}
	}
}
