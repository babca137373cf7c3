package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An idle hearth serve stays under 40 MiB RSS (issue 13; it held about
// 100 MiB while an argon2id run at start-up kept its 64 MiB). The binary
// under test is a plain -trimpath build: the race detector's shadow memory
// would measure the detector, not hearth. scripts/bench/memory.sh reports
// the figure with start-up time and the peak under a login flood.
func TestIdleRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no /proc/PID/status to read RSS from (%v); CI runs on Linux", err)
		}
		t.Skip("no /proc/PID/status to read RSS from (a Linux /proc is the prerequisite)")
	}
	bin := filepath.Join(t.TempDir(), "hearth")
	if out, err := exec.Command("go", "build", "-trimpath", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "data")
	if out, err := exec.Command(bin, "init", "--dir", dir, "--owner", "alice").CombinedOutput(); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--ca-listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !servingRE.MatchString(sc.Text()) {
	}
	time.Sleep(3 * time.Second) // idle
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var rss int64 = -1
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rss, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	if rss < 0 {
		t.Fatalf("no VmRSS in /proc/%d/status", cmd.Process.Pid)
	}
	t.Logf("idle hearth serve: VmRSS %.1f MiB", float64(rss)/1024)
	if rss >= 40<<10 {
		t.Errorf("idle hearth serve holds %.1f MiB RSS, want under 40 MiB", float64(rss)/1024)
	}
}
