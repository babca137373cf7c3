package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/hearth-home/hearth/audit"

	"github.com/hearth-home/hearth/internal/store/boltstore"
)

// fakeClock is the injected clock of the tests: time moves only when a test
// says so.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// recorder keeps events in memory and can be told to fail.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
	fail   bool
}

func (r *recorder) Record(_ context.Context, e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("disk full")
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) setFail(f bool) {
	r.mu.Lock()
	r.fail = f
	r.mu.Unlock()
}

func (r *recorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, e.Name+"/"+e.Outcome)
	}
	return out
}

func (r *recorder) all() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// tinyArgon2 keeps most tests fast; the tests about parameters use real ones.
var tinyArgon2 = Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}

type harness struct {
	t      *testing.T
	s      *Service
	db     *bbolt.DB
	clk    *fakeClock
	rec    *recorder
	srv    *httptest.Server
	client *http.Client
}

func openDB(t testing.TB, dir string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, "hearth.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.Argon2 == (Argon2Params{}) {
		cfg.Argon2 = tinyArgon2
	}
	if cfg.ClientBurst == 0 {
		cfg.ClientBurst = 1000
	}
	h := &harness{t: t, clk: &fakeClock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}, rec: &recorder{}}
	h.db = openDB(t, t.TempDir())
	s, err := Open(boltstore.New(h.db), cfg, Options{Audit: h.rec, Now: h.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	mux := http.NewServeMux()
	mux.Handle("/.hearth/v1/auth/", s.Handler())
	mux.Handle("/.hearth/v1/admin/users", s.AdminHandler())
	mux.Handle("/.hearth/v1/admin/users/", s.AdminHandler())
	h.srv = httptest.NewTLSServer(mux)
	h.client = h.srv.Client()
	t.Cleanup(func() {
		h.srv.Close()
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		h.db.Close()
	})
	return h
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %d %q is not JSON: %v", r.status, r.body, err)
	}
}

func (h *harness) do(method, path string, body any, bearer string) response {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}
}

func (h *harness) post(path string, body any) response { return h.do("POST", path, body, "") }

func (h *harness) login(user, pw string) response {
	return h.post("/.hearth/v1/auth/login", map[string]any{"username": user, "password": pw})
}

// mustLogin logs in and returns the answer.
func (h *harness) mustLogin(user, pw string) loginAnswer {
	h.t.Helper()
	r := h.login(user, pw)
	if r.status != http.StatusOK {
		h.t.Fatalf("login(%s) = %d %s, want 200", user, r.status, r.body)
	}
	var a loginAnswer
	r.json(h.t, &a)
	return a
}

const alicePw = "correct horse battery staple"

func (h *harness) addUser(name string, caps ...string) {
	h.t.Helper()
	if len(caps) == 0 {
		caps = []string{"system:read"}
	}
	if err := h.s.AddUser(context.Background(), name, caps, alicePw); err != nil {
		h.t.Fatalf("AddUser(%s): %v", name, err)
	}
}
