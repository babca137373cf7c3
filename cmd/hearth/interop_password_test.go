package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hearth-home/hearth/auth"
)

// TestInteropPassword drives issue 4 on the real binary with curl and
// `hearth login`: a user added over the admin socket logs in and uses the
// token as a Bearer credential; a token in the URL is refused; unknown
// user and wrong password look the same; five failures lock the account
// (the right password then gets 429 with Retry-After) while devices keep
// working; `hearth user unlock` ends the lockout; logout kills the token.
func TestInteropPassword(t *testing.T) {
	t.Parallel()
	// The per-address bucket (10 attempts) is exercised by
	// TestInteropGateway; here it is widened so that the per-account
	// rules are what answers.
	h := startInteropHearth(t, func(y string) string {
		const at = "\nauth:\n"
		if !strings.Contains(y, at) {
			t.Fatalf("hearth.yaml has no auth section:\n%s", y)
		}
		return strings.Replace(y, at, at+"  client_burst: 1000\n", 1)
	})
	reader := h.enroll(t, "reader", "system:read")
	const pw = "kettle lantern orbit meadow 97"

	mustHearthIn := func(t *testing.T, stdin string, args ...string) string {
		t.Helper()
		out, errOut, err := hearthCmd(t, h.dir, stdin, args...)
		if err != nil {
			t.Fatalf("hearth %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}
	login := func(t *testing.T, password string) (string, string, error) {
		t.Helper()
		return hearthCmd(t, h.dir, password+"\n", "login", "--url", h.base(), "--user", "bob", "--fingerprint", h.fingerprint)
	}
	// loginCurl posts a login with curl.
	loginCurl := func(t *testing.T, user, password string) curlResult {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"username": user, "password": password})
		return h.curlDo(t, "-H", "Content-Type: application/json", "--data-binary", string(body), h.base()+"/.hearth/v1/auth/login")
	}
	bearer := func(t *testing.T, tok, path string) curlResult {
		t.Helper()
		return h.curlDo(t, "-H", "Authorization: Bearer "+tok, h.base()+path)
	}
	deviceOK := func(t *testing.T, path string) {
		t.Helper()
		if r := h.curlDo(t, append(devCurlArgs(reader), h.base()+path)...); r.status != http.StatusOK {
			t.Errorf("device request %s = %d %s, want 200", path, r.status, r.body)
		}
	}

	mustHearthIn(t, pw+"\n", "user", "add", "bob", "--caps", "system:read")
	mustHearthIn(t, pw+"\n", "user", "add", "carol", "--caps", "system:read")

	var tok string
	t.Run("login prints a Bearer token", func(t *testing.T) {
		out, errOut, err := login(t, pw)
		if err != nil {
			t.Fatalf("hearth login: %v\n%s%s", err, out, errOut)
		}
		tok = strings.TrimSpace(out)
		if !strings.HasPrefix(tok, auth.AccessTokenPrefix) || strings.Contains(tok, "\n") {
			t.Fatalf("hearth login printed %q, want one %s… token", out, auth.AccessTokenPrefix)
		}
		r := bearer(t, tok, "/api/status")
		if r.status != http.StatusOK {
			t.Fatalf("Bearer /api/status = %d %s", r.status, r.body)
		}
		var st struct{ Principal, Method string }
		json.Unmarshal(r.body, &st)
		if st.Principal != "user:bob" || st.Method != "token" {
			t.Errorf("agent saw %+v, want user:bob via token", st)
		}
		// The token carries at most bob's capabilities.
		if r := h.curlDo(t, "-H", "Authorization: Bearer "+tok, "-X", "PUT", "--data-binary", "{}", h.base()+"/api/settings"); r.status != http.StatusForbidden {
			t.Errorf("bob's token PUT /api/settings = %d, want 403", r.status)
		}
		// hearth's token is not the agent's business.
		for _, s := range h.seen("/api/status") {
			if s.Principal == "user:bob" && strings.Contains(s.Capabilities, "settings") {
				t.Errorf("agent saw %+v", s)
			}
		}
	})
	if tok == "" {
		t.FailNow()
	}

	t.Run("token in the URL refused", func(t *testing.T) {
		for _, q := range []string{"access_token", "token", "ACCESS_TOKEN", "access%5Ftoken"} {
			path := "/api/conversations/url-" + strings.ToLower(strings.ReplaceAll(q, "%", ""))
			r := h.curlDo(t, h.base()+path+"?"+q+"="+tok)
			if r.status == http.StatusOK || r.status/100 != 4 {
				t.Errorf("?%s=TOKEN = %d %s, want a 4xx refusal", q, r.status, r.body)
			}
			if s := h.seen(path); len(s) != 0 {
				t.Errorf("?%s=TOKEN reached the agent: %+v", q, s)
			}
		}
	})

	t.Run("unknown user and wrong password look the same", func(t *testing.T) {
		unknown := loginCurl(t, "nobody", pw)
		wrong := loginCurl(t, "bob", pw+"x")
		if unknown.status != http.StatusUnauthorized || wrong.status != http.StatusUnauthorized {
			t.Fatalf("unknown user = %d, wrong password = %d; want 401 both", unknown.status, wrong.status)
		}
		if string(unknown.body) != string(wrong.body) {
			t.Errorf("bodies differ:\nunknown user:   %s\nwrong password: %s", unknown.body, wrong.body)
		}
		for _, k := range []string{"Content-Type", "Content-Length", "WWW-Authenticate", "Retry-After"} {
			if unknown.header.Get(k) != wrong.header.Get(k) {
				t.Errorf("%s: unknown user %q, wrong password %q", k, unknown.header.Get(k), wrong.header.Get(k))
			}
		}
	})

	t.Run("five failures lock; the right password is then 429", func(t *testing.T) {
		// One failure above; four more make five consecutive failures.
		for i := 2; i <= 5; i++ {
			if r := loginCurl(t, "bob", pw+strconv.Itoa(i)); r.status != http.StatusUnauthorized {
				t.Fatalf("wrong password #%d = %d %s, want 401", i, r.status, r.body)
			}
		}
		r := loginCurl(t, "bob", pw)
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("right password after 5 failures = %d %s, want 429", r.status, r.body)
		}
		ra, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 60 {
			t.Errorf("Retry-After = %q, want 1..60 seconds (the first lockout is one minute)", r.header.Get("Retry-After"))
		}
		if code, _ := jsonError(t, r.body); code == "" {
			t.Errorf("429 body %s lacks a code", r.body)
		}
		if out, errOut, err := login(t, pw); err == nil {
			t.Errorf("hearth login while locked printed %q", out)
		} else if !strings.Contains(errOut, "retry after") {
			t.Errorf("hearth login while locked: %q, want it to say when to retry", errOut)
		}
		// The owner is never locked out of the house: devices, the admin
		// socket and tokens issued before keep working.
		deviceOK(t, "/api/status")
		deviceOK(t, "/api/conversations")
		var users []auth.UserInfo
		if err := json.Unmarshal([]byte(mustHearth(t, h.dir, "user", "list", "--json")), &users); err != nil {
			t.Fatal(err)
		}
		locked := false
		for _, u := range users {
			if u.Name == "bob" {
				locked = u.LockedUntil != nil && u.LockedUntil.After(time.Now())
			}
		}
		if !locked {
			t.Errorf("user list --json = %+v, want bob locked", users)
		}
	})

	t.Run("locked, disabled and unknown accounts look the same", func(t *testing.T) {
		// An unknown name is throttled like a real one: five failures,
		// then 429 whatever the password, so a lockout reveals nothing.
		for i := 1; i <= 5; i++ {
			if r := loginCurl(t, "ghost", pw); r.status != http.StatusUnauthorized {
				t.Fatalf("unknown user attempt #%d = %d, want 401", i, r.status)
			}
		}
		ghost, bob := loginCurl(t, "ghost", pw), loginCurl(t, "bob", pw)
		if ghost.status != http.StatusTooManyRequests || bob.status != http.StatusTooManyRequests || string(ghost.body) != string(bob.body) {
			t.Errorf("locked unknown user = %d %s, locked bob = %d %s; want the same 429", ghost.status, ghost.body, bob.status, bob.body)
		}
		mustHearth(t, h.dir, "user", "disable", "carol")
		disabled, unknown := loginCurl(t, "carol", pw), loginCurl(t, "nobody-else", pw)
		if disabled.status != http.StatusUnauthorized || string(disabled.body) != string(unknown.body) {
			t.Errorf("disabled user with the right password = %d %s, unknown user = %d %s; want the same 401", disabled.status, disabled.body, unknown.status, unknown.body)
		}
	})

	var tok2 string
	t.Run("unlock lets bob log in again", func(t *testing.T) {
		mustHearth(t, h.dir, "user", "unlock", "bob")
		out, errOut, err := login(t, pw)
		if err != nil {
			t.Fatalf("hearth login after unlock: %v\n%s", err, errOut)
		}
		tok2 = strings.TrimSpace(out)
		if r := bearer(t, tok2, "/api/status"); r.status != http.StatusOK {
			t.Errorf("new token /api/status = %d %s", r.status, r.body)
		}
	})

	t.Run("logout kills the token", func(t *testing.T) {
		if tok2 == "" {
			t.Fatal("no token: the unlock step failed")
		}
		// A websocket opened with the token is closed by the logout too.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pool := x509.NewCertPool()
		pool.AddCert(readPEMCert(t, h.rootFile))
		ws, _, err := websocket.Dial(ctx, "wss://"+h.srv.gateway+"/ws", &websocket.DialOptions{
			HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
			HTTPHeader: http.Header{"Authorization": {"Bearer " + tok2}},
		})
		if err != nil {
			t.Fatalf("websocket with bob's token: %v", err)
		}
		defer ws.CloseNow()
		if err := ws.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "hi" {
			t.Fatalf("echo = %q %v", msg, err)
		}

		r := h.curlDo(t, "-X", "POST", "-H", "Authorization: Bearer "+tok2, h.base()+"/.hearth/v1/auth/logout")
		if r.status/100 != 2 {
			t.Fatalf("logout = %d %s, want 2xx", r.status, r.body)
		}
		r = bearer(t, tok2, "/api/conversations/after-logout")
		if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_token") {
			t.Errorf("token after logout = %d (%q), want 401 with error=invalid_token (RFC 6750 §3.1)", r.status, r.header.Get("WWW-Authenticate"))
		}
		if s := h.seen("/api/conversations/after-logout"); len(s) != 0 {
			t.Errorf("agent saw a logged-out token's request: %+v", s)
		}
		if r := h.curlDo(t, "-H", "Authorization: Bearer "+tok2, h.base()+"/.hearth/v1/whoami"); r.status != http.StatusUnauthorized {
			t.Errorf("whoami after logout = %d, want 401", r.status)
		}
		loggedOut := time.Now()
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		defer rcancel()
		_, _, err = ws.Read(rctx)
		if took := time.Since(loggedOut); err == nil || rctx.Err() != nil || took > 5*time.Second {
			t.Errorf("websocket after logout: read = %v after %v, want closed within 5s", err, took)
		}
	})

	t.Run("a recovery code from init works once", func(t *testing.T) {
		code := h.init.RecoveryCodes[3]
		const newPW = "a brand new passphrase for alice"
		// A session from init's password, which recovery must end.
		before := loginCurl(t, "alice", h.init.Password)
		var old struct{ Token string }
		if before.status != http.StatusOK || json.Unmarshal(before.body, &old) != nil || old.Token == "" {
			t.Fatalf("alice's login with init's password = %d %s", before.status, before.body)
		}
		recover := func() (string, string, error) {
			return hearthCmd(t, h.dir, newPW+"\n", "login", "--url", h.base(), "--user", "alice", "--fingerprint", h.fingerprint, "--recovery-code", code)
		}
		out, errOut, err := recover()
		if err != nil {
			t.Fatalf("hearth login --recovery-code: %v\n%s%s", err, out, errOut)
		}
		r := bearer(t, strings.TrimSpace(out), "/.hearth/v1/whoami")
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `"principal":"user:alice"`) {
			t.Errorf("alice's token after recovery: whoami = %d %s", r.status, r.body)
		}
		if out, _, err := recover(); err == nil {
			t.Errorf("the same recovery code worked twice: %q", out)
		}
		if r := bearer(t, old.Token, "/.hearth/v1/whoami"); r.status != http.StatusUnauthorized {
			t.Errorf("alice's earlier token after recovery: whoami = %d, want 401 (recovery ends every session)", r.status)
		}
		// The one-time password from init is gone with the recovery.
		if r := loginCurl(t, "alice", h.init.Password); r.status == http.StatusOK {
			t.Error("init's password still logs in after recovery")
		}
	})

	h.stop(t)
}
