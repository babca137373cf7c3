package webui

import (
	"strings"
	"testing"
	"time"
)

// FuzzOpenTicket: a download ticket from a form opens only if this process
// sealed it and it has not expired; anything else is refused, never a
// panic, and a sealed ticket changed in any byte is refused.
func FuzzOpenTicket(f *testing.F) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	u := New(Options{Now: func() time.Time { return now }})
	good, err := u.sealTicket(ticket{Device: "phone", TokenID: "abc", Password: "pw", Expires: now.Add(time.Minute)})
	if err != nil {
		f.Fatal(err)
	}
	old, _ := u.sealTicket(ticket{Device: "phone", TokenID: "abc", Password: "pw", Expires: now.Add(-time.Second)})
	for _, s := range []string{good, old, "", "AAAA", strings.Repeat("A", 5000), good[:len(good)-1] + "A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tk, err := u.openTicket(s)
		if err != nil {
			return
		}
		if s != good {
			t.Fatalf("a ticket other than the sealed one opened: %q → %+v", s, tk)
		}
		if !now.Before(tk.Expires) {
			t.Fatalf("an expired ticket opened")
		}
	})
}

func TestCSRFTokenBinding(t *testing.T) {
	u := New(Options{})
	a, b := u.csrfMAC("cookie-a"), u.csrfMAC("cookie-b")
	if a == b || a != u.csrfMAC("cookie-a") {
		t.Fatalf("the CSRF token is not a function of the cookie alone")
	}
	if other := New(Options{}); other.csrfMAC("cookie-a") == a {
		t.Fatalf("two processes share a CSRF key")
	}
}

func TestInWords(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "1 second"}, {1500 * time.Millisecond, "2 seconds"}, {59 * time.Second, "59 seconds"},
		{60 * time.Second, "1 minute"}, {61 * time.Second, "2 minutes"}, {2 * time.Minute, "2 minutes"},
		{time.Hour, "1 hour"}, {90 * time.Minute, "2 hours"},
	} {
		if got := inWords(tt.d); got != tt.want {
			t.Errorf("inWords(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestDetectPlatform(t *testing.T) {
	for ua, want := range map[string]string{
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148": PlatformIOS,
		"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 Chrome/130.0 Mobile Safari/537.36":   PlatformAndroid,
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36":   PlatformWindows,
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/17.0 Safari":  PlatformMac,
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36":             PlatformLinux,
		"": PlatformLinux,
	} {
		if got := DetectPlatform(ua); got != want {
			t.Errorf("DetectPlatform(%q) = %s, want %s", ua, got, want)
		}
	}
}
