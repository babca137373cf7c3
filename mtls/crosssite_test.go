package mtls

import (
	"net/http"
	"strings"
	"testing"
)

// A browser holding a device certificate presents it to every request for
// the gateway's host; a form on another site must not be able to use it
// to change anything, while the CLI (which sends neither Origin nor
// Sec-Fetch-Site) and the agent's own same-origin pages keep working.
func TestCrossSiteWithDeviceCertificate(t *testing.T) {
	h := newHarness(t)
	laptop := h.ca.device(t, "laptop") // system:admin: plugins:install allowed
	c := h.client(t, &laptop, clientOpt{})
	tests := []struct {
		name, method, path string
		hdr                http.Header
		want               int
	}{
		{"cli post", "POST", "/api/plugins/install", nil, 200},
		{"same-origin fetch metadata", "POST", "/api/plugins/install", http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {h.url}}, 200},
		{"same-origin origin only", "POST", "/api/plugins/install", http.Header{"Origin": {h.url}}, 200},
		{"user-initiated", "POST", "/api/plugins/install", http.Header{"Sec-Fetch-Site": {"none"}}, 200},
		{"cross-site form", "POST", "/api/plugins/install", http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}}, 403},
		{"same-site sibling", "PUT", "/api/settings/model", http.Header{"Sec-Fetch-Site": {"same-site"}}, 403},
		{"cross-site origin only", "POST", "/api/plugins/install", http.Header{"Origin": {"https://evil.example"}}, 403},
		{"opaque origin", "DELETE", "/api/settings/model", http.Header{"Origin": {"null"}}, 403},
		{"two origins", "POST", "/api/plugins/install", http.Header{"Origin": {h.url, "https://evil.example"}}, 403},
		{"hearth's own api", "POST", "/.hearth/v1/admin/devices", http.Header{"Sec-Fetch-Site": {"cross-site"}}, 403},
		{"cross-site get", "GET", "/api/status", http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.up.len()
			r := do(t, c, tt.method, h.url+tt.path, strings.NewReader("name=evil"), tt.hdr)
			if r.status != tt.want {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, r.status, r.body, tt.want)
			}
			if tt.want != 403 {
				return
			}
			if n := h.up.len(); n != before {
				t.Errorf("the agent saw the refused request")
			}
			if !strings.Contains(r.body, `"code":"cross_site"`) {
				t.Errorf("body %s, want code cross_site", r.body)
			}
			if e := h.rec.last(); e.Outcome != "deny" || e.Meta["check"] != "cross_site" || e.Resource != tt.path {
				t.Errorf("last audit entry %+v, want the cross-site refusal of %s", e, tt.path)
			}
		})
	}
	// Without a certificate a cross-site request is not refused by this
	// rule (it has no ambient credential; it gets 401).
	anon := h.client(t, nil, clientOpt{})
	if r := do(t, anon, "POST", h.url+"/api/plugins/install", nil, http.Header{"Sec-Fetch-Site": {"cross-site"}}); r.status != 401 {
		t.Errorf("anonymous cross-site post = %d, want 401", r.status)
	}
	// The refusal fails closed without the audit log.
	h.rec.setFail(true)
	defer h.rec.setFail(false)
	if r := do(t, c, "POST", h.url+"/api/plugins/install", nil, http.Header{"Sec-Fetch-Site": {"cross-site"}}); r.status != 503 {
		t.Errorf("cross-site post with the log down = %d, want 503", r.status)
	}
}

func FuzzIsCrossSite(f *testing.F) {
	f.Add("same-origin", "https://h:1", "h:1")
	f.Add("", "null", "h")
	f.Add("", "", "h")
	f.Add("cross-site", "", "")
	f.Fuzz(func(t *testing.T, site, origin, host string) {
		r, _ := http.NewRequest("POST", "https://x/", nil)
		r.Host = host
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		got := isCrossSite(r)
		if site == "" && origin == "" && got {
			t.Fatalf("a request without Origin or Sec-Fetch-Site is cross-site")
		}
		if site != "" && site != "same-origin" && site != "none" && !got {
			t.Fatalf("Sec-Fetch-Site %q passed", site)
		}
	})
}
