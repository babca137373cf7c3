//go:build unix

package audit

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes this test binary as a child process that
// appends under load; see TestMain.
const crashChildEnv = "HEARTH_AUDIT_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		os.Exit(3) // crashChild never returns normally
	}
	os.Exit(m.Run())
}

// crashChild opens the log and appends from 16 goroutines forever,
// printing "ack <index> <seq>" for every Record that returned nil. The
// parent kills it with SIGKILL.
func crashChild(dir string) {
	l, err := Open(dir, Config{SegmentSize: 8 << 10}, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: Open:", err)
		os.Exit(2)
	}
	cycle := os.Getenv("HEARTH_AUDIT_CRASH_CYCLE")
	var out sync.Mutex
	os.Stdout.WriteString("ready\n")
	for g := range 16 {
		go func() {
			for n := 0; ; n++ {
				seq := fmt.Sprintf("c%s-g%d-%d", cycle, g, n)
				e := testEvent(n)
				e.Meta["seq"] = seq
				i, err := l.Append(context.Background(), e)
				if err != nil {
					fmt.Fprintln(os.Stderr, "child: Append:", err)
					os.Exit(2)
				}
				line := fmt.Sprintf("ack %d %s\n", i, seq)
				out.Lock()
				os.Stdout.WriteString(line) // one write(2): whole in the pipe or not at all
				out.Unlock()
			}
		}()
	}
	select {}
}

// TestCrash kills a process that appends under load with SIGKILL at random
// moments, many times over the same log, restarting it each time (which
// recovers the log); then the log must verify and hold every entry whose
// Record had returned, with its content.
func TestCrash(t *testing.T) {
	cycles := 50
	if s := os.Getenv("HEARTH_AUDIT_CRASH_CYCLES"); s != "" {
		cycles, _ = strconv.Atoi(s)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (cycles %d)", seed, cycles)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	acked := map[int64]string{}
	tails := 0
	start := time.Now()
	for c := range cycles {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, "HEARTH_AUDIT_CRASH_CYCLE="+strconv.Itoa(c))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1<<16)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		select {
		case l := <-lines:
			if l != "ready" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("cycle %d: child said %q, stderr %s", c, l, stderr.String())
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("cycle %d: child not ready; stderr %s", c, stderr.String())
		}
		// Let it append for a random while, then kill -9.
		time.Sleep(time.Duration(rng.IntN(40_000)) * time.Microsecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for l := range lines {
			var i int64
			var seq string
			if _, err := fmt.Sscanf(l, "ack %d %s", &i, &seq); err != nil {
				t.Fatalf("cycle %d: child printed %q", c, l)
			}
			if prev, dup := acked[i]; dup {
				t.Fatalf("cycle %d: index %d acknowledged twice (%s, %s)", c, i, prev, seq)
			}
			acked[i] = seq
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("cycle %d: child ended with %v, not by SIGKILL; stderr %s", c, err, stderr.String())
		}
		// Right after the kill, before the restart repairs anything, the
		// signed history verifies and holds every acknowledged entry; what
		// follows it is named as the unsigned tail.
		res, err := Verify(dir, VerifyOptions{})
		if err != nil {
			t.Fatalf("cycle %d: Verify right after kill -9: %v", c, err)
		}
		if res.Entries <= maxAcked(acked) {
			t.Fatalf("cycle %d: Verify covers %d entries, but entry %d was acknowledged", c, res.Entries, maxAcked(acked))
		}
		if res.Unsigned != nil {
			tails++
			if res.Unsigned.After != res.Entries || res.Unsigned.Segment == "" {
				t.Fatalf("cycle %d: unsigned tail %+v after %d entries", c, res.Unsigned, res.Entries)
			}
		}
	}
	t.Logf("verify right after the kill named an unsigned tail %d times in %d", tails, cycles)
	t.Logf("%d cycles, %d acknowledged entries in %v", cycles, len(acked), time.Since(start).Round(time.Millisecond))

	// Restart once more (recovery), close, verify.
	l, err := Open(dir, Config{SegmentSize: 8 << 10}, Options{})
	if err != nil {
		t.Fatalf("Open after the last crash: %v", err)
	}
	size := l.Size()
	l.Close()
	res := mustVerify(t, dir, VerifyOptions{})
	if res.Entries != size {
		t.Fatalf("Verify: %d entries, log size %d", res.Entries, size)
	}
	r, err := NewReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	es, err := r.Read(0, int(size))
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, e := range es {
		if want, ok := acked[e.Index]; ok {
			if e.Meta["seq"] != want {
				t.Fatalf("entry %d holds %q, but %q was acknowledged with that index", e.Index, e.Meta["seq"], want)
			}
			seen++
		}
	}
	if seen != len(acked) {
		t.Fatalf("%d of %d acknowledged entries are in the log", seen, len(acked))
	}
	starts, discards, repairs := 0, 0, 0
	for _, e := range es {
		if e.Name == EventAuditStart {
			starts++
			if e.Meta["discarded"] != "" {
				discards++
			}
			if e.Meta["repaired"] != "" {
				repairs++
			}
		}
	}
	if starts != cycles+1 {
		t.Errorf("%d audit.start entries, want %d", starts, cycles+1)
	}
	t.Logf("recoveries: %d discarded an unacknowledged tail, %d repaired a torn record", discards, repairs)
}

func maxAcked(acked map[int64]string) int64 {
	m := int64(-1)
	for i := range acked {
		m = max(m, i)
	}
	return m
}
