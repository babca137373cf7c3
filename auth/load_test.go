package auth

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// vmHWM returns the process's peak resident set size in bytes
// (/proc/self/status VmHWM; Linux only, the CI machine).
func vmHWM(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatalf("reading peak RSS: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// TestLoadBadLogins sends 300 concurrent bad logins over loopback TLS at the
// default argon2id parameters (64 MiB) with two hashing slots: every answer
// is 401, 429 or 503, tokens keep verifying throughout, at most two
// evaluations run at once, and peak RSS grows by no more than a small
// multiple of slots × 64 MiB (see bound).
func TestLoadBadLogins(t *testing.T) {
	const slots = 2
	h := newHarness(t, Config{
		Argon2:              Argon2Params{Time: DefaultArgon2Time, MemoryKiB: DefaultArgon2MemoryKiB, Threads: DefaultArgon2Threads},
		MaxConcurrentHashes: slots, HashQueue: 4, ClientBurst: 1000,
	})
	h.addUser("alice")
	a := h.mustLogin("alice", alicePw)
	h.client.Transport.(*http.Transport).MaxConnsPerHost = 0
	h.client.Transport.(*http.Transport).MaxIdleConnsPerHost = 300
	before := vmHWM(t)
	var counts sync.Map
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var tokenChecks, tokenFailures atomic.Int64
	go func() { // "the server keeps serving": token verification never stalls
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := h.s.AuthenticateToken(context.Background(), a.Token); err != nil {
				tokenFailures.Add(1)
			}
			tokenChecks.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	start := time.Now()
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := h.login(fmt.Sprintf("user%d", i%40), "not the right password")
			v, _ := counts.LoadOrStore(r.status, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}()
	}
	wg.Wait()
	close(stop)
	elapsed := time.Since(start)
	after := vmHWM(t)
	summary := map[int]int64{}
	counts.Range(func(k, v any) bool {
		summary[k.(int)] = v.(*atomic.Int64).Load()
		switch k.(int) {
		case 401, 429, 503:
		default:
			t.Errorf("%d answers with status %d", v.(*atomic.Int64).Load(), k)
		}
		return true
	})
	if tokenFailures.Load() > 0 || tokenChecks.Load() == 0 {
		t.Errorf("token checks during the flood: %d of %d failed", tokenFailures.Load(), tokenChecks.Load())
	}
	if p := h.s.hasher.peak.Load(); p > slots {
		t.Errorf("%d argon2id evaluations ran at once, want at most %d", p, slots)
	}
	// The live memory is at most slots × m; Go's collector lets the heap
	// reach about twice the live data before it collects (GOGC=100), and
	// freed pages return to the OS lazily, so RSS may grow by up to three
	// times that, plus a constant; the race detector's shadow memory
	// multiplies it. 300 unbounded evaluations would need 19 GiB.
	bound := (int64(3*slots*DefaultArgon2MemoryKiB<<10) + 64<<20) * raceMemFactor
	t.Logf("300 bad logins in %s: statuses %v; argon2id evaluations %d; peak RSS %d MiB before, %d MiB after (growth %d MiB, bound %d MiB)",
		elapsed.Round(time.Millisecond), summary, h.s.hasher.evals.Load(), before>>20, after>>20, (after-before)>>20, bound>>20)
	if after-before > bound {
		t.Errorf("peak RSS grew by %d MiB, more than %d MiB", (after-before)>>20, bound>>20)
	}
}
