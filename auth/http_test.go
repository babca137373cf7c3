package auth

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hearth-home/hearth/internal/store/boltstore"
)

func TestHTTPEdges(t *testing.T) {
	h := newHarness(t, Config{})
	h.addUser("alice")
	cases := []struct {
		name   string
		method string
		path   string
		body   string
		bearer string
		status int
		code   string
	}{
		{"unknown field", "POST", "/.hearth/v1/auth/login", `{"username":"alice","password":"x","admin":true}`, "", 400, "bad_request"},
		{"trailing data", "POST", "/.hearth/v1/auth/login", `{"username":"alice","password":"x"} {}`, "", 400, "bad_request"},
		{"not JSON", "POST", "/.hearth/v1/auth/login", `username=alice`, "", 400, "bad_request"},
		{"wrong method", "GET", "/.hearth/v1/auth/login", ``, "", 404, "not_found"},
		{"logout without a token", "POST", "/.hearth/v1/auth/logout", ``, "", 401, "no_token"},
		{"logout with junk", "POST", "/.hearth/v1/auth/logout", ``, "hth_at_junk", 401, "invalid_token"},
		{"password change without a token", "POST", "/.hearth/v1/auth/password", `{}`, "", 401, "invalid_token"},
		{"refresh with junk", "POST", "/.hearth/v1/auth/refresh", `{"refresh_token":"x"}`, "", 401, "invalid_credentials"},
		{"reset with a short password", "POST", "/.hearth/v1/auth/reset", `{"username":"alice","reset_code":"x","new_password":"short"}`, "", 400, "password_too_short"},
		{"unknown admin action", "POST", "/.hearth/v1/admin/users/alice/promote", ``, "", 404, "not_found"},
	}
	for _, c := range cases {
		r := h.do(c.method, c.path, []byte(c.body), c.bearer)
		if r.status != c.status || !strings.Contains(string(r.body), `"code":"`+c.code+`"`) {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.status, r.body, c.status, c.code)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", c.name, ct)
		}
	}
}

// FuzzLoginHandler feeds arbitrary bodies to the public handler: the answer
// is always one of the statuses DESIGN.md lists, never a 500 or a panic.
func FuzzLoginHandler(f *testing.F) {
	f.Add(uint8(0), `{"username":"alice","password":"correct horse battery staple"}`)
	f.Add(uint8(0), `{"username":"","password":"","totp":"123456","scope":["status"]}`)
	f.Add(uint8(1), `{"refresh_token":"hth_rt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`)
	f.Add(uint8(2), `{"username":"alice","recovery_code":"ABCD-EFGH-JKMN-PQRS","new_password":"a brand new passphrase"}`)
	f.Add(uint8(3), `{"username":"alice","reset_code":"hth_rs_x","new_password":"a brand new passphrase"}`)
	f.Add(uint8(4), `{"old_password":"x","new_password":"y"}`)
	f.Add(uint8(0), "{\"username\":\"\xff\",\"password\":\"\\ud800\"}")
	db := openDB(f, f.TempDir())
	defer db.Close()
	s, err := Open(boltstore.New(db), Config{Argon2: tinyArgon2, ClientBurst: 1 << 30}, Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	if err := s.AddUser(f.Context(), "alice", []string{"status"}, "correct horse battery staple"); err != nil {
		f.Fatal(err)
	}
	hd := s.Handler()
	paths := []string{"login", "refresh", "recover", "reset", "password", "logout"}
	f.Fuzz(func(t *testing.T, ep uint8, body string) {
		path := "/.hearth/v1/auth/" + paths[int(ep)%len(paths)]
		req := httptest.NewRequest("POST", "https://hearth.test"+path, bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer "+body)
		req.RemoteAddr = "127.0.0.1:1"
		w := httptest.NewRecorder()
		hd.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK, http.StatusNoContent, 400, 401, 404, 413, 429, 503:
		default:
			t.Errorf("POST %s %q = %d %s", path, body, w.Code, w.Body)
		}
	})
}
