package auth

import (
	"context"
	"errors"
	"testing"
)

// A user sees her own sessions only and ends only her own.
func TestSessionsAreTheUsersOwn(t *testing.T) {
	h := newHarness(t, Config{})
	ctx := context.Background()
	h.addUser("alice")
	h.addUser("bob")
	a1, a2, b := h.mustLogin("alice", alicePw), h.mustLogin("alice", alicePw), h.mustLogin("bob", alicePw)
	ss := h.s.Sessions(ctx, "alice", a1.Token)
	if len(ss) != 2 {
		t.Fatalf("alice has %d sessions, want 2", len(ss))
	}
	cur := 0
	for _, s := range ss {
		if s.Current {
			cur++
		}
	}
	if cur != 1 {
		t.Errorf("%d sessions marked current, want 1", cur)
	}
	bobs := h.s.Sessions(ctx, "bob", b.Token)
	if len(bobs) != 1 {
		t.Fatalf("bob has %d sessions", len(bobs))
	}
	if err := h.s.EndSession(ctx, "alice", bobs[0].Family, "test"); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("alice ending bob's session = %v, want ErrInvalidCredentials", err)
	}
	if _, err := h.s.AuthenticateToken(ctx, b.Token); err != nil {
		t.Errorf("bob's token died: %v", err)
	}
	var other string
	for _, s := range ss {
		if !s.Current {
			other = s.Family
		}
	}
	if err := h.s.EndSession(ctx, "alice", other, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.s.AuthenticateToken(ctx, a2.Token); err == nil {
		t.Errorf("the ended session's token still authenticates")
	}
	if _, err := h.s.AuthenticateToken(ctx, a1.Token); err != nil {
		t.Errorf("the current session ended too: %v", err)
	}
}
