package ca

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"
)

// ListDevices flags, on the CA's clock, a device whose newest certificate
// no client renewed at two thirds of its lifetime, one that expires soon,
// and one that expired; a renewal clears the flags.
func TestDeviceWarnings(t *testing.T) {
	tc := newTestCA(t, Config{})
	cert, leaf := tc.enrolled(t, "pi", "system:read")
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	warnsAt := func(at time.Time) []string {
		t.Helper()
		tc.now = func() time.Time { return at }
		defer func() { tc.now = time.Now }()
		ds, err := tc.ListDevices(context.Background())
		if err != nil || len(ds) != 1 {
			t.Fatalf("ListDevices = %v, %v", ds, err)
		}
		return ds[0].Warnings
	}
	start := leaf.NotBefore
	for _, c := range []struct {
		at   time.Duration // after NotBefore
		want []string
	}{
		{time.Hour, nil},
		{life * 2 / 3, nil},       // due, a renewing client is on it
		{life*2/3 + life/24, nil}, // still within the retries
		{life*2/3 + life/12 + time.Hour, []string{WarnNotRenewing}},
		{life - 4*24*time.Hour, []string{WarnNotRenewing, WarnExpiresSoon}}, // 720h: a sixth is 5 days
		{life + time.Second, []string{WarnExpired}},
	} {
		if got := warnsAt(start.Add(c.at)); !slices.Equal(got, c.want) {
			t.Errorf("warnings %v after NotBefore (lifetime %v) = %q, want %q", c.at, life, got, c.want)
		}
	}
	// A renewing client refreshes it: the newest certificate has no flag.
	st, out := post(t, tc.client(cert), tc.gateway.URL+RenewPath, []byte(""))
	if st != http.StatusCreated {
		t.Fatalf("renew = %d %v", st, out)
	}
	if got := warnsAt(time.Now().Add(time.Hour)); got != nil {
		t.Errorf("warnings after a renewal = %q, want none", got)
	}
}
