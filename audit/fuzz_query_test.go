package audit

import (
	"net/url"
	"strconv"
	"testing"
)

// FuzzParseAdminQuery: ParseAdminQuery never panics, and what it accepts
// is within the endpoint's bounds (1 <= n <= 1000, before at most the
// log's size) with the filters the query gave.
func FuzzParseAdminQuery(f *testing.F) {
	for _, s := range []string{"", "n=50", "n=1000&before=7", "event=auth.login&principal=user:alice",
		"since=2026-12-01T00:00:00.123456789Z", "n=0", "n=01", "before=-1", "n=1&n=2", "%zz", "x=1", "since=2026-12-01"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, raw string, size int64) {
		if size < 0 {
			size = -(size + 1)
		}
		q, err := ParseAdminQuery(raw, size)
		if err != nil {
			return
		}
		v, perr := url.ParseQuery(raw)
		if perr != nil {
			t.Fatalf("accepted a malformed query %q", raw)
		}
		if q.N < 1 || q.N > maxAdminEntries || q.Before < 0 || q.Before > size {
			t.Fatalf("%q (size %d) → n %d, before %d: out of bounds", raw, size, q.N, q.Before)
		}
		if q.Event != v.Get("event") || q.Principal != v.Get("principal") {
			t.Fatalf("%q → event %q principal %q", raw, q.Event, q.Principal)
		}
		if n := v.Get("n"); n != "" && n != strconv.Itoa(q.N) {
			t.Fatalf("%q → n %d", raw, q.N)
		}
	})
}

// FuzzParseProofQuery: ParseProofQuery never panics, and what it accepts
// asks for a proof that exists in a log of size entries.
func FuzzParseProofQuery(f *testing.F) {
	for _, s := range []string{"index=3&size=7", "old=2&size=7", "", "index=1", "index=1&old=1&size=3", "index=01&size=3", "size=0&index=0", "old=8&size=7", "index=1&size=3&x=1"} {
		f.Add(s, int64(7))
	}
	f.Fuzz(func(t *testing.T, raw string, size int64) {
		q, err := ParseProofQuery(raw, size)
		if err != nil {
			return
		}
		if q.Size < 1 || q.Size > size {
			t.Fatalf("%q (log %d) → size %d", raw, size, q.Size)
		}
		if q.Consistency && (q.Old < 1 || q.Old > q.Size) || !q.Consistency && (q.Index < 0 || q.Index >= q.Size) {
			t.Fatalf("%q (log %d) → %+v: no such proof", raw, size, q)
		}
	})
}
