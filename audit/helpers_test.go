package audit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testClock is a clock that moves one second per reading.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// testRand is the fixed randomness of the test key: logs made with it sign
// identically on every run (Ed25519 signatures are deterministic).
func testRand() *rand.ChaCha8 {
	var seed [32]byte
	copy(seed[:], "hearth audit fixed test key seed")
	return rand.NewChaCha8(seed)
}

// newTestDir makes a data dir with a log keyed by the fixed test key.
func newTestDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := initWith(dir, DefaultTrustDomain, testRand()); err != nil {
		t.Fatal(err)
	}
	return dir
}

func openTest(t testing.TB, dir string, cfg Config, opts Options) *Log {
	t.Helper()
	if opts.Now == nil {
		opts.Now = newTestClock().Now
	}
	l, err := Open(dir, cfg, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func testEvent(i int) Event {
	return Event{
		Name:      EventAuthzDecision,
		Outcome:   OutcomeAllow,
		Principal: fmt.Sprintf("device:pi-%d", i%3),
		Resource:  fmt.Sprintf("/api/v1/status/%d", i),
		Reason:    "capability status granted by system:read",
		Client:    "192.168.1.20:51234",
		Meta:      map[string]string{"method": "GET", "capability": "status", "seq": fmt.Sprint(i)},
	}
}

func mustRecord(t testing.TB, l *Log, e Event) int64 {
	t.Helper()
	i, err := l.Append(context.Background(), e)
	if err != nil {
		t.Fatalf("Append(%s): %v", e.Name, err)
	}
	return i
}

func mustVerify(t testing.TB, dir string, opts VerifyOptions) *VerifyResult {
	t.Helper()
	res, err := Verify(dir, opts)
	if err != nil {
		t.Fatalf("Verify = %v; result %+v", err, res)
	}
	return res
}

func auditPath(dir string, elem ...string) string {
	return filepath.Join(append([]string{dir, DirName}, elem...)...)
}
