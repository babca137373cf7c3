package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/auth/oidc"
	"github.com/hearth-home/hearth/internal/admin"
)

type linkStore struct {
	mu    sync.Mutex
	links map[string]string
}

func (s *linkStore) UserForIdentity(_ context.Context, iss, sub string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.links[iss+" "+sub]
	return u, ok, nil
}

func (s *linkStore) LinkIdentity(_ context.Context, user, iss, sub string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if user != "alice" {
		return fmt.Errorf("store: %w", oidc.ErrUnknownUser)
	}
	s.links[iss+" "+sub] = user
	return nil
}

type noSessions struct{}

func (noSessions) IssueSession(context.Context, string, string, bool, string) (oidc.Session, error) {
	return oidc.Session{}, errors.New("not used")
}

func runLink(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	e := &env{stdout: &out, stderr: &out}
	root := &cobra.Command{Use: "hearth", SilenceErrors: true, SilenceUsage: true}
	root.PersistentFlags().String("dir", dir, "")
	root.AddCommand(newUserLinkCmd(e))
	root.SetArgs(append([]string{"link"}, args...))
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestUserLinkCmd(t *testing.T) {
	dir := t.TempDir()
	_, err := runLink(t, dir, "alice", "--provider", "dex", "--subject", "s1")
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(ee.msg, "not running") {
		t.Fatalf("without a server: err = %#v, want exit 1 saying the server is not running", err)
	}
	store := &linkStore{links: map[string]string{}}
	var h *oidc.Handler
	h, err = oidc.New([]oidc.Provider{{Name: "dex", Issuer: "https://dex.example", ClientID: "hearth"}},
		oidc.Options{Sessions: noSessions{}, Identities: store, Audit: audit.Discard{}, PublicURL: "https://hearth.example:8443"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := admin.Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h.AdminHandler()}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	out, err := runLink(t, dir, "alice", "--provider", "dex", "--subject", "s1")
	if err != nil || !strings.Contains(out, "linked dex identity s1 (issuer https://dex.example) to user alice") {
		t.Fatalf("user link = %q, %v", out, err)
	}
	if u, _, _ := store.UserForIdentity(context.Background(), "https://dex.example", "s1"); u != "alice" {
		t.Fatalf("link not stored: %q", u)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown user", []string{"mallory", "--provider", "dex", "--subject", "s2"}, "no such user"},
		{"unknown provider", []string{"alice", "--provider", "nope", "--subject", "s2"}, "no such OIDC provider"},
		{"missing subject", []string{"alice", "--provider", "dex"}, "--provider and --subject are required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runLink(t, dir, tc.args...)
			var ee exitError
			if !errors.As(err, &ee) || !strings.Contains(ee.msg, tc.want) {
				t.Fatalf("err = %#v, want an exit error containing %q", err, tc.want)
			}
		})
	}
}
