package auth

import (
	"context"
	"errors"
	"net/http"
	"testing"
)

// The admin socket acts as user:local in every audit entry; no user may
// take that name, or the owner at the machine and that user would be one
// and the same in the log (OWASP ASVS 5.0 V16.2.1: entries say who acted).
func TestLocalIsNotAUserName(t *testing.T) {
	h := newHarness(t, Config{})
	for _, name := range []string{"local", "Local"} {
		err := h.s.AddUser(context.Background(), canonicalName(name), []string{"status"}, "")
		if !errors.Is(err, ErrBadName) {
			t.Errorf("AddUser(%q) = %v, want ErrBadName", name, err)
		}
	}
	r := h.do(http.MethodPost, "/.hearth/v1/admin/users", AddUserRequest{Name: "local", Caps: []string{"status"}}, "")
	if r.status != http.StatusBadRequest {
		t.Errorf("POST /admin/users {name: local} = %d %s, want 400", r.status, r.body)
	}
	if _, _, err := h.s.CreateOwner(context.Background(), "local"); !errors.Is(err, ErrBadName) {
		t.Errorf("CreateOwner(local) = %v, want ErrBadName", err)
	}
}
