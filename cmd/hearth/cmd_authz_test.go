package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-home/hearth/internal/admin"
	"github.com/hearth-home/hearth/internal/httpx"
)

func runExplain(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append(append([]string{"authz", "explain"}, args...), "--dir", dir), strings.NewReader(""), &out, &errb)
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.code
		errb.WriteString(ee.msg)
	default:
		t.Fatalf("explain %q: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func TestAuthzExplainOffline(t *testing.T) {
	dir := t.TempDir()
	yaml := `authz:
  capabilities: [calendar:read]
  bundles:
    family: [system:read, calendar:read]
  requirements:
    calendar:read: {zones: [lan]}
`
	if err := os.WriteFile(filepath.Join(dir, "hearth.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		wantOut  string // first two lines
		wantMore string
	}{
		{"device reads status", []string{"device:kitchen-pi", "status", "--caps", "system:read"}, 0,
			"allow\ndevice:kitchen-pi has status via device from lan\n", "requirement of status: none"},
		{"device lacks plugins", []string{"device:kitchen-pi", "plugins:install", "--caps", "system:read"}, 1,
			"deny\ndevice:kitchen-pi lacks plugins:install (has conversations:read, status)\n", ""},
		{"remote password token", []string{"user:alice", "plugins:install", "--caps", "system:admin", "--via", "token", "--from", "remote"}, 1,
			"deny\nplugins:install requires a device or local session, this is a token from remote (a token would need a second factor)\n", "a second factor for tokens from remote"},
		{"remote mfa token", []string{"user:alice", "plugins:install", "--caps", "system:admin", "--from", "remote", "--mfa"}, 0,
			"allow\n", ""},
		{"stale admin token", []string{"user:alice", "hearth:admin", "--caps", "system:admin", "--mfa", "--age", "20m"}, 1,
			"deny\nhearth:admin requires an authentication at most 15m0s old, this one is 20m0s old; log in again\n", ""},
		{"passkey admin token from remote", []string{"user:alice", "hearth:admin", "--caps", "system:admin", "--from", "remote", "--passkey", "--age", "2h"}, 0,
			"allow\nuser:alice has hearth:admin via token from remote\n", "passkey tokens at most 12h0m0s old"},
		{"local owner", []string{"user:local", "hearth:admin", "--caps", "system:admin", "--via", "local"}, 0,
			"allow\nuser:local has hearth:admin via local from lan\n", ""},
		{"bundle from hearth.yaml", []string{"user:kid", "calendar:read", "--caps", "family"}, 0, "allow\n", ""},
		{"requirement from hearth.yaml", []string{"user:kid", "calendar:read", "--caps", "family", "--from", "remote"}, 1,
			"deny\ncalendar:read requires a request from lan, this is a token from remote\n", ""},
		{"unknown capability", []string{"user:kid", "teleport", "--caps", "family"}, 1, "deny\n\"teleport\" is not a known capability\n", ""},
		{"device by token is malformed", []string{"device:pi", "status", "--caps", "status", "--via", "token"}, 1, "deny\ndevice:pi is not a well-formed principal", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := runExplain(t, dir, tt.args...)
			if code != tt.code {
				t.Fatalf("exit = %d (%s), want %d; stdout %q", code, errs, tt.code, out)
			}
			if !strings.HasPrefix(out, tt.wantOut) || !strings.Contains(out, tt.wantMore) {
				t.Errorf("stdout = %q, want prefix %q containing %q", out, tt.wantOut, tt.wantMore)
			}
		})
	}
}

func TestAuthzExplainErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad principal", []string{"alice", "status", "--caps", "status"}, "user:NAME or device:NAME"},
		{"bad via", []string{"user:a", "status", "--caps", "status", "--via", "magic"}, "--via"},
		{"bad from", []string{"user:a", "status", "--caps", "status", "--from", "moon"}, "--from"},
		{"unknown grant", []string{"user:a", "status", "--caps", "sytem:read"}, "neither a capability nor a bundle"},
		{"server not running", []string{"user:a", "status"}, "hearth is not running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := runExplain(t, dir, tt.args...)
			if code != 2 || !strings.Contains(errs, tt.want) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", code, out, errs, tt.want)
			}
		})
	}
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "hearth.yaml"), []byte("authz:\n  bundles:\n    x:x: [nope:nope]\n"), 0o600)
	if _, errs, code := runExplain(t, bad, "user:a", "status", "--caps", "status"); code != 2 || !strings.Contains(errs, "unknown capability") {
		t.Errorf("bad hearth.yaml: exit %d, %q", code, errs)
	}
}

// TestAuthzExplainAsksServer serves the admin endpoint on a real admin
// socket, as the running server does.
func TestAuthzExplainAsksServer(t *testing.T) {
	dir, err := os.MkdirTemp("", "hz")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := admin.Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.hearth/v1/admin/principals/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "device:kitchen-pi" {
			httpx.Error(w, http.StatusNotFound, "not_found", "no such principal")
			return
		}
		httpx.JSON(w, http.StatusOK, map[string]any{"id": "device:kitchen-pi", "capabilities": []string{"conversations:read", "status"}})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	out, _, code := runExplain(t, dir, "device:kitchen-pi", "settings:modify")
	if code != 1 || !strings.HasPrefix(out, "deny\ndevice:kitchen-pi lacks settings:modify (has conversations:read, status)\n") {
		t.Errorf("explain via server = %d %q", code, out)
	}
	out, _, code = runExplain(t, dir, "device:kitchen-pi", "status")
	if code != 0 || !strings.HasPrefix(out, "allow\n") {
		t.Errorf("explain via server = %d %q", code, out)
	}
	if _, errs, code := runExplain(t, dir, "device:ghost", "status"); code != 2 || !strings.Contains(errs, "no such principal") {
		t.Errorf("unknown principal = %d %q", code, errs)
	}
}
