package ca

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	xacme "golang.org/x/crypto/acme"

	"github.com/hearth-home/hearth/audit"
)

func acmeClient(t *testing.T, tc *testCA) *xacme.Client {
	t.Helper()
	cl := &xacme.Client{Key: newKey(t), DirectoryURL: tc.api.URL + "/acme/acme/directory", HTTPClient: tc.client(nil)}
	if _, err := cl.Register(context.Background(), &xacme.Account{}, xacme.AcceptTOS); err != nil {
		t.Fatalf("ACME register: %v", err)
	}
	return cl
}

// A new-order for a name outside ca.acme_domains is refused with
// rejectedIdentifier (RFC 8555 §6.7) and a detail naming the setting,
// before any authorization exists; the refusal is audited. A household
// name gets its order.
func TestACMENewOrderPolicy(t *testing.T) {
	tc := newTestCA(t, Config{})
	cl := acmeClient(t, tc)
	ctx := context.Background()

	for _, tcase := range []struct {
		name string
		ids  []xacme.AuthzID
	}{
		{"public name", xacme.DomainIDs("bank.example.com")},
		{"one bad among good", xacme.DomainIDs("web.home.arpa", "bank.example.com")},
		{"bare suffix", xacme.DomainIDs("home.arpa")},
		{"hearth's own name", xacme.DomainIDs("hearth.test")},
		{"public address", xacme.IPIDs("8.8.8.8")},
	} {
		t.Run(tcase.name, func(t *testing.T) {
			before := len(tc.audit.named(audit.EventCertIssue, audit.OutcomeFailure))
			_, err := cl.AuthorizeOrder(ctx, tcase.ids)
			var ae *xacme.Error
			if !errors.As(err, &ae) || ae.ProblemType != "urn:ietf:params:acme:error:rejectedIdentifier" || ae.StatusCode != http.StatusBadRequest {
				t.Fatalf("AuthorizeOrder(%v) = %v, want 400 rejectedIdentifier", tcase.ids, err)
			}
			if !strings.Contains(ae.Detail, "ca.acme_domains") {
				t.Errorf("detail %q does not name ca.acme_domains", ae.Detail)
			}
			if len(ae.Subproblems) == 0 || ae.Subproblems[0].Identifier == nil {
				t.Errorf("subproblems %+v, want one per refused identifier", ae.Subproblems)
			}
			evs := tc.audit.named(audit.EventCertIssue, audit.OutcomeFailure)
			if len(evs) != before+1 || evs[len(evs)-1].Resource != ACMEOrderResource || evs[len(evs)-1].Meta["setting"] != "ca.acme_domains" {
				t.Errorf("audit entries %+v, want one new %s refusal", evs[before:], ACMEOrderResource)
			}
		})
	}
	o, err := cl.AuthorizeOrder(ctx, xacme.DomainIDs("web.home.arpa"))
	if err != nil || o.Status != xacme.StatusPending || len(o.AuthzURLs) != 1 {
		t.Fatalf("AuthorizeOrder(web.home.arpa) = %+v, %v; want a pending order", o, err)
	}
}

// Refused ACME requests spend the address's budget of failed attempts
// shared with the other CA endpoints; over it, rateLimited with
// Retry-After (RFC 8555 §6.6), and one aggregated audit entry.
func TestACMEFailuresAreThrottled(t *testing.T) {
	tc := newTestCA(t, Config{})
	fixed := time.Now()
	tc.thrNow = func() time.Time { return fixed } // no refill during the test
	cl := acmeClient(t, tc)                       // a success: its attempt is given back
	// x/crypto/acme retries a 429 after Retry-After; see the answer instead.
	cl.RetryBackoff = func(int, *http.Request, *http.Response) time.Duration { return -1 }
	ctx := context.Background()
	var last error
	for i := 0; i < failBurst+1; i++ {
		_, last = cl.AuthorizeOrder(ctx, xacme.DomainIDs("bank.example.com"))
	}
	var ae *xacme.Error
	if !errors.As(last, &ae) || ae.ProblemType != "urn:ietf:params:acme:error:rateLimited" || ae.StatusCode != http.StatusTooManyRequests || ae.Header.Get("Retry-After") == "" {
		t.Fatalf("request %d = %v, want 429 rateLimited with Retry-After", failBurst+1, last)
	}
	refusals := 0
	throttled := 0
	for _, e := range tc.audit.named(audit.EventCertIssue, audit.OutcomeFailure) {
		switch {
		case strings.HasPrefix(e.Reason, "throttled"):
			throttled++
		case e.Resource == ACMEOrderResource:
			refusals++
		}
	}
	if refusals != failBurst || throttled != 1 {
		t.Errorf("audit: %d refusals and %d throttle entries, want %d and 1", refusals, throttled, failBurst)
	}
	// The same budget covers hearth's own enrollment: this address is out.
	code, _ := tc.enroll(t, "not-a-token", "")
	if code != http.StatusTooManyRequests {
		t.Errorf("enroll from the throttled address = %d, want 429", code)
	}
}
