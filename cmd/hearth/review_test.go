package main

import (
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spf13/cobra"
)

// Every command's --help shows an example, as the CLI contract asks.
func TestEveryCommandHasAnExample(t *testing.T) {
	e := &env{}
	var walk func(path string, c *cobra.Command)
	walk = func(path string, c *cobra.Command) {
		if c.Example == "" {
			t.Errorf("hearth %s --help has no Example", path)
		}
		for _, sub := range c.Commands() {
			walk(strings.TrimSpace(path+" "+sub.Name()), sub)
		}
	}
	for _, mk := range commands {
		c := mk(e)
		walk(c.Name(), c)
	}
}

// hearth login never sends a password over a URL that is not https, nor
// follows a redirect with it (OWASP ASVS 5.0 V12.2.1: TLS for every
// connection that carries credentials).
func TestLoginRefusesPlainHTTP(t *testing.T) {
	var hits atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte(`{"token":"x"}`))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	plain := "http://" + ln.Addr().String()
	cases := []struct {
		name string
		url  string
	}{
		{"http", plain},
		{"HTTP upper case", "HTTP://" + ln.Addr().String()},
		{"no scheme", ln.Addr().String()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, err := runCmd(t, "a long passphrase of words\n", "login", "--url", c.url, "--user", "alice")
			var ee exitError
			if err == nil || !asExit(err, &ee) || !strings.Contains(ee.msg, "https://") {
				t.Errorf("login --url %s = %v (stderr %q), want an error asking for https://", c.url, err, stderr)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the plain HTTP listener got %d requests, want 0", n)
	}
}

// The audit commands on a dir without a log say what to do, not which
// file stat failed.
func TestAuditCommandsWithoutALog(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"audit", "verify"}, {"audit", "tail"}, {"audit", "checkpoint"}} {
		_, _, err := runCmd(t, "", append(args, "--dir", dir)...)
		if err == nil || !strings.Contains(err.Error(), "hearth init --dir") || !strings.Contains(err.Error(), "--dir") {
			t.Errorf("%v on an empty dir = %v, want an error naming --dir and hearth init", args, err)
		}
	}
}

// An admin command naming an unknown user says how to see who exists.
func TestUnknownUserSaysWhatToDo(t *testing.T) {
	dir, _, _ := userServer(t)
	_, _, err := runCmd(t, "", "user", "unlock", "nobody", "--dir", dir)
	if err == nil || !strings.Contains(err.Error(), "hearth user list") {
		t.Errorf("user unlock nobody = %v, want an error pointing to hearth user list", err)
	}
}
