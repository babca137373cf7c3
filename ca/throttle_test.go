package ca

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hearth-home/hearth/audit"
)

// stepClock is an injected clock that moves only when told to.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// throttledCA is a test CA whose failure throttle runs on a fake clock.
func throttledCA(t *testing.T) (*testCA, *stepClock) {
	t.Helper()
	tc := newTestCA(t, Config{})
	clk := &stepClock{t: time.Now()}
	tc.thrNow = clk.Now // before any request: the handlers read it later
	return tc, clk
}

// clientFrom is tc's HTTPS client dialling from the loopback address src
// (any of 127.0.0.0/8), so that tests can act as distinct client addresses.
func (tc *testCA) clientFrom(src string) *http.Client {
	hc := tc.client(nil)
	tr := hc.Transport.(*http.Transport)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	tr.DialContext = d.DialContext
	return hc
}

// postRaw posts a JSON body and returns the status, the Retry-After header
// and the decoded JSON answer.
func postRaw(t *testing.T, hc *http.Client, u string, body any) (int, string, map[string]any) {
	t.Helper()
	bs, _ := json.Marshal(body)
	resp, err := hc.Post(u, "application/json", bytes.NewReader(bs))
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, resp.Header.Get("Retry-After"), out
}

// TestEnrollThrottle: on the gateway's POST /.hearth/v1/enroll, ten failed
// attempts from one address are answered 401 and audited one by one; the
// next ones are 429 with Retry-After, before the token is looked at (a good
// token sent while throttled stays usable), and are audited once per 10 s
// with the number left out. Another address enrolls meanwhile; a success
// gives its attempt back; the budget refills with the clock.
func TestEnrollThrottle(t *testing.T) {
	tc, clk := throttledCA(t)
	ctx := context.Background()
	one, other := tc.clientFrom("127.0.0.1"), tc.clientFrom("127.0.0.2")
	u := tc.gateway.URL + EnrollPath
	csr := tc.deviceCSR(t, "pi", newKey(t))
	bad := EnrollRequest{Token: "not-a-token", CSR: csr}
	failures := func() []audit.Event { return tc.audit.named(audit.EventDeviceEnroll, audit.OutcomeFailure) }

	for i := range failBurst {
		if st, _, out := postRaw(t, one, u, bad); st != http.StatusUnauthorized {
			t.Fatalf("bad token #%d = %d %v, want 401", i+1, st, out)
		}
	}
	if n := len(failures()); n != failBurst {
		t.Fatalf("%d failure entries after %d bad tokens, want %d", n, failBurst, failBurst)
	}

	// Over budget: 429 before the token is even looked at, so a good
	// token sent now is not consumed.
	pi, err := tc.AddDevice(ctx, "pi", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, retry, out := postRaw(t, one, u, EnrollRequest{Token: pi.Token, CSR: csr})
	if st != http.StatusTooManyRequests || out["code"] != "throttled" {
		t.Fatalf("11th attempt = %d %v, want 429 throttled", st, out)
	}
	if secs, err := strconv.Atoi(retry); err != nil || secs != int(failRefill/time.Second) {
		t.Errorf("Retry-After = %q, want %d", retry, int(failRefill/time.Second))
	}
	ev := failures()
	if len(ev) != failBurst+1 {
		t.Fatalf("%d failure entries after the first throttled attempt, want %d", len(ev), failBurst+1)
	}
	if agg := ev[len(ev)-1]; agg.Reason != "throttled: too many failed attempts from this address" || agg.Client == "" || agg.Meta["similar_unrecorded"] != "" {
		t.Errorf("throttled entry = %+v", agg)
	}
	for range 2 {
		if st, _, out := postRaw(t, one, u, bad); st != http.StatusTooManyRequests {
			t.Fatalf("throttled attempt = %d %v, want 429", st, out)
		}
	}
	clk.Add(failRefill - 100*time.Millisecond) // not yet a whole attempt back
	if st, _, out := postRaw(t, one, u, bad); st != http.StatusTooManyRequests {
		t.Fatalf("throttled attempt just before the refill = %d %v, want 429", st, out)
	}
	if n := len(failures()); n != failBurst+1 {
		t.Errorf("%d failure entries after 4 throttled attempts within 10 s, want %d (one aggregated)", n, failBurst+1)
	}

	// Another address's good token enrolls regardless.
	tv, err := tc.AddDevice(ctx, "tv", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st, _, out := postRaw(t, other, u, EnrollRequest{Token: tv.Token, CSR: tc.deviceCSR(t, "tv", newKey(t))}); st != http.StatusCreated {
		t.Fatalf("good token from another address = %d %v, want 201", st, out)
	}

	// 10.5 s after the first throttled entry: one attempt is back; the
	// one after it is throttled and audited again with the count left out.
	clk.Add(throttleAudit + 500*time.Millisecond - (failRefill - 100*time.Millisecond))
	if st, _, out := postRaw(t, one, u, bad); st != http.StatusUnauthorized {
		t.Fatalf("attempt after the refill = %d %v, want 401", st, out)
	}
	if st, _, out := postRaw(t, one, u, bad); st != http.StatusTooManyRequests {
		t.Fatalf("attempt past the refill = %d %v, want 429", st, out)
	}
	ev = failures()
	if len(ev) != failBurst+3 {
		t.Fatalf("%d failure entries, want %d", len(ev), failBurst+3)
	}
	if got := ev[len(ev)-1].Meta["similar_unrecorded"]; got != "3" {
		t.Errorf("similar_unrecorded = %q, want 3 (the throttled attempts left out)", got)
	}

	// A full refill later the good token, never consumed, enrolls; and a
	// success gives its attempt back: 9 failures + 1 success + 1 failure
	// all pass, the next is throttled.
	clk.Add(time.Duration(failBurst) * failRefill)
	for i := range failBurst - 1 {
		if st, _, out := postRaw(t, one, u, bad); st != http.StatusUnauthorized {
			t.Fatalf("bad token #%d after refill = %d %v, want 401", i+1, st, out)
		}
	}
	if st, _, out := postRaw(t, one, u, EnrollRequest{Token: pi.Token, CSR: csr}); st != http.StatusCreated {
		t.Fatalf("the token sent while throttled, now = %d %v, want 201 (it must not have been consumed)", st, out)
	}
	if st, _, out := postRaw(t, one, u, bad); st != http.StatusUnauthorized {
		t.Fatalf("failure after a success = %d %v, want 401 (the success is given back)", st, out)
	}
	if st, _, out := postRaw(t, one, u, bad); st != http.StatusTooManyRequests {
		t.Fatalf("failure past the budget = %d %v, want 429", st, out)
	}
}

// TestSignThrottle: smallstep's /1.0/sign on the CA listener has the same
// budget, answering 429 in smallstep's JSON with Retry-After, audited once.
func TestSignThrottle(t *testing.T) {
	tc, _ := throttledCA(t)
	ctx := context.Background()
	one, other := tc.clientFrom("127.0.0.1"), tc.clientFrom("127.0.0.2")
	u := tc.api.URL + "/1.0/sign"
	bad := map[string]string{"ott": "not-a-token", "csr": tc.deviceCSR(t, "pi", newKey(t))}
	for i := range failBurst {
		if st, _, out := postRaw(t, one, u, bad); st != http.StatusUnauthorized {
			t.Fatalf("bad ott #%d = %d %v, want 401", i+1, st, out)
		}
	}
	for i := range 3 {
		st, retry, out := postRaw(t, one, u, bad)
		if st != http.StatusTooManyRequests || retry == "" || fmt.Sprint(out["status"]) != "429" || out["message"] == nil {
			t.Fatalf("throttled sign #%d = %d Retry-After %q %v, want 429 with Retry-After and smallstep's JSON", i+1, st, retry, out)
		}
	}
	if n := len(tc.audit.named(audit.EventCertIssue, audit.OutcomeFailure)); n != failBurst+1 {
		t.Errorf("%d cert.issue failure entries, want %d (one aggregated for the throttled)", n, failBurst+1)
	}
	tv, err := tc.AddDevice(ctx, "tv", []string{"status"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st, _, out := postRaw(t, other, u, map[string]string{"ott": tv.Token, "csr": tc.deviceCSR(t, "tv", newKey(t))}); st != http.StatusCreated {
		t.Fatalf("good sign from another address = %d %v, want 201", st, out)
	}
}
