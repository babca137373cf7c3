package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

// GET /.hearth/v1/admin/principals/{id}: an unknown principal is 404, a
// store that cannot be read is 503 (DESIGN.md), and the store's own error
// never reaches the client.
func TestPrincipalInfoStatuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(context.Background(), dir, InitOptions{Listen: "127.0.0.1:0", CAListen: "127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	get := func(id string) (int, map[string]string) {
		r := httptest.NewRequest(http.MethodGet, "/.hearth/v1/admin/principals/"+id, nil)
		r.SetPathValue("id", id)
		w := httptest.NewRecorder()
		s.principalInfo(w, r)
		var out map[string]string
		json.Unmarshal(w.Body.Bytes(), &out)
		return w.Code, out
	}
	if st, _ := get("user:owner"); st != http.StatusOK {
		t.Fatalf("user:owner = %d, want 200", st)
	}
	for _, id := range []string{"device:nope", "user:nope"} {
		if st, out := get(id); st != http.StatusNotFound || out["code"] != "not_found" {
			t.Errorf("%s = %d %v, want 404 not_found", id, st, out)
		}
	}
	s.db.Close() // the store fails from here on
	for _, id := range []string{"device:pi", "user:owner"} {
		st, out := get(id)
		if st != http.StatusServiceUnavailable || out["code"] != "unavailable" || strings.Contains(out["error"], "database") {
			t.Errorf("%s with the store closed = %d %v, want 503 unavailable without the store's error", id, st, out)
		}
	}
}
