package webui

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
)

// FuzzSameOrigin: whatever the headers, a request passes only when its one
// Origin is exactly https://<Host> (ASCII case aside), or when it has no
// Origin and Sec-Fetch-Site is same-origin.
func FuzzSameOrigin(f *testing.F) {
	f.Add("hearth.home.arpa:8443", "https://hearth.home.arpa:8443", true, "")
	f.Add("hearth.home.arpa:8443", "https://HEARTH.home.arpa:8443", true, "")
	f.Add("hearth.home.arpa:8443", "https://hearth.home.arpa:8443.evil", true, "")
	f.Add("hearth.home.arpa:8443", "null", true, "same-origin")
	f.Add("hearth.home.arpa:8443", "", true, "")
	f.Add("hearth.home.arpa:8443", "", false, "same-origin")
	f.Add("hearth.home.arpa:8443", "", false, "same-site")
	f.Add("hearth.home.arpa:8443", "", false, "none")
	f.Add("h", "https://h/", true, "")
	f.Add("", "https://", true, "")
	f.Fuzz(func(t *testing.T, host, origin string, hasOrigin bool, site string) {
		r := &http.Request{Host: host, Header: http.Header{}, TLS: &tls.ConnectionState{}}
		if hasOrigin {
			r.Header.Set("Origin", origin)
		}
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		got := sameOrigin(r)
		want := strings.EqualFold(origin, "https://"+host)
		if !hasOrigin {
			want = site == "same-origin"
		}
		if host == "" {
			want = false // no Host: nothing to compare with
		}
		if got != want {
			t.Fatalf("sameOrigin(Host %q, Origin %q (%v), Sec-Fetch-Site %q) = %v, want %v", host, origin, hasOrigin, site, got, want)
		}
		if got && hasOrigin && (origin == "null" || origin == "") {
			t.Fatalf("accepted Origin %q", origin)
		}
	})
}
