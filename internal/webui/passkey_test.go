package webui_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hearth-home/hearth/internal/webui"
)

// The passkey endpoints are guarded like the forms: same origin, the CSRF
// token, a bounded JSON body; the pages that offer passkeys allow script
// and fetch from hearth itself only.
func TestPasskeyEndpointsGuarded(t *testing.T) {
	e := newEnv(t, envOpts{passkeys: true})
	u, _ := url.Parse(e.url)
	if err := e.auth.EnablePasskeys("https://localhost:"+u.Port(), ""); err != nil {
		t.Fatal(err)
	}
	c := e.browser(t)
	r := e.do(t, c, "GET", webui.LoginPath, nil, nil)
	const want = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
	if got := r.header.Get("Content-Security-Policy"); got != want {
		t.Errorf("login page CSP = %q, want %q", got, want)
	}
	if !strings.Contains(r.body, `<script src="/.hearth/ui/static/passkey.js"></script>`) || !strings.Contains(r.body, `id="passkey-signin"`) {
		t.Errorf("the login page offers no passkey")
	}
	if s := e.do(t, c, "GET", "/.hearth/ui/static/passkey.js", nil, nil); s.status != 200 || !strings.Contains(s.body, "parseRequestOptionsFromJSON") {
		t.Errorf("passkey.js = %d", s.status)
	}
	token := formToken(t, r.body)
	post := func(body string, hdr http.Header) resp {
		t.Helper()
		req, _ := http.NewRequest("POST", e.url+webui.PasskeyLoginOptions, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header[k] = v
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return resp{res.StatusCode, res.Header, string(b)}
	}
	ok := `{"csrf":"` + token + `"}`
	tests := []struct {
		name   string
		body   string
		hdr    http.Header
		status int
		code   string
	}{
		{"same origin with the token", ok, e.sameOrigin(), 200, ""},
		{"no origin", ok, nil, 403, "cross_site"},
		{"another origin", ok, http.Header{"Origin": {"https://evil.example"}}, 403, "cross_site"},
		{"no token", `{}`, e.sameOrigin(), 403, "csrf"},
		{"wrong token", `{"csrf":"x` + token[1:] + `"}`, e.sameOrigin(), 403, "csrf"},
		{"unknown field", `{"csrf":"` + token + `","admin":true}`, e.sameOrigin(), 400, "bad_request"},
		{"too large", `{"csrf":"` + token + `","label":"` + strings.Repeat("a", 80<<10) + `"}`, e.sameOrigin(), 413, "too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := post(tt.body, tt.hdr)
			if r.status != tt.status || !strings.Contains(r.body, tt.code) {
				t.Errorf("status %d %s, want %d %s", r.status, r.body, tt.status, tt.code)
			}
		})
	}
	// Adding a passkey needs a user's own session.
	req, _ := http.NewRequest("POST", e.url+webui.PasskeyRegisterOptions, strings.NewReader(ok))
	req.Header.Set("Origin", e.url)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("registration options without a session = %d, want 401", res.StatusCode)
	}
}
