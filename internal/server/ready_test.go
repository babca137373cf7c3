package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// GET /.hearth/readyz: 200 when store, audit and CA work; 503 naming the
// failing part once the store is closed, without its error.
func TestReadyz(t *testing.T) {
	dir := initializedDir(t)
	var skew atomic.Int64 // how far the injected clock is ahead
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	s, err := Open(Options{Dir: dir, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	get := func() (int, map[string]any) {
		w := httptest.NewRecorder()
		s.live.Load().mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/.hearth/readyz", nil))
		var out map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("readyz body %q: %v", w.Body, err)
		}
		return w.Code, out
	}
	if st, out := get(); st != http.StatusOK || out["status"] != "ready" {
		t.Fatalf("readyz = %d %v, want 200 ready", st, out)
	}
	// Twenty years on, the intermediate has expired: the CA is not ready.
	skew.Store(int64(20 * 365 * 24 * time.Hour))
	st, out := get()
	if failing, _ := out["failing"].([]any); st != http.StatusServiceUnavailable || out["code"] != "not_ready" || len(failing) != 1 || failing[0] != "ca" {
		t.Errorf("readyz with the intermediate expired = %d %v, want 503 not_ready failing [ca]", st, out)
	}
	skew.Store(0)
	// A closed store fails the store, and the CA, whose devices are in it.
	s.db.Close()
	st, out = get()
	failing, _ := out["failing"].([]any)
	if st != http.StatusServiceUnavailable || len(failing) == 0 || failing[0] != "store" {
		t.Errorf("readyz with the store closed = %d %v, want 503 failing store first", st, out)
	}
	if checks, _ := out["checks"].(map[string]any); checks["audit"] != "ok" {
		t.Errorf("readyz checks = %v, want audit ok", out["checks"])
	}
	if msg, _ := out["error"].(string); strings.Contains(msg, "database") || strings.Contains(msg, dir) {
		t.Errorf("readyz error %q carries the store's error or a path", msg)
	}
}
