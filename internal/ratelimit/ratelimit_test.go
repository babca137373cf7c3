package ratelimit

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC)

func TestKey(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"ipv4", "198.51.100.7:443", "198.51.100.7"},
		{"ipv4-mapped", "[::ffff:198.51.100.7]:443", "198.51.100.7"},
		{"ipv6 per /64", "[2001:db8:1:2:aaaa::1]:443", "2001:db8:1:2::/64"},
		{"ipv6 zone dropped", "[fe80::1%eth0]:443", "fe80::/64"},
		{"no port", "198.51.100.7", "198.51.100.7"},
		{"bare ipv6", "2001:db8::1", "2001:db8::/64"},
		{"garbage is bounded", strings.Repeat("x", 200), strings.Repeat("x", 64)},
		{"garbage with port is bounded", strings.Repeat("x", 200) + ":1", strings.Repeat("x", 64)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Key(tt.in); got != tt.want {
				t.Errorf("Key(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestKeySame: IPv4 per address, IPv6 per /64, mapped IPv4 as IPv4.
func TestKeySame(t *testing.T) {
	for _, tt := range []struct {
		name, a, b string
		same       bool
	}{
		{"same IPv4 other port", "192.0.2.1:1", "192.0.2.1:2", true},
		{"other IPv4", "192.0.2.1:1", "192.0.2.2:1", false},
		{"mapped IPv4", "[::ffff:192.0.2.1]:1", "192.0.2.1:1", true},
		{"same IPv6 /64", "[2001:db8:1:2::1]:1", "[2001:db8:1:2:ffff::9]:1", true},
		{"other IPv6 /64", "[2001:db8:1:2::1]:1", "[2001:db8:1:3::1]:1", false},
		{"IPv6 zone", "[fe80::1%eth0]:1", "[fe80::2%eth1]:1", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Key(tt.a) == Key(tt.b); got != tt.same {
				t.Errorf("Key(%q)=%q, Key(%q)=%q; same = %v, want %v", tt.a, Key(tt.a), tt.b, Key(tt.b), got, tt.same)
			}
		})
	}
}

func TestNewConfig(t *testing.T) {
	for _, tt := range []struct {
		name     string
		in, want Config
	}{
		{"defaults", Config{Burst: 2, Refill: time.Second},
			Config{Burst: 2, Refill: time.Second, MaxEntries: DefaultMaxEntries, AuditEvery: DefaultAuditEvery, Forget: DefaultForget}},
		{"kept", Config{Burst: 3, Refill: time.Minute, MaxEntries: 7, AuditEvery: time.Hour, Forget: time.Minute},
			Config{Burst: 3, Refill: time.Minute, MaxEntries: 7, AuditEvery: time.Hour, Forget: time.Minute}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := New(tt.in).Config(); got != tt.want {
				t.Errorf("Config() = %+v, want %+v", got, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"no burst", Config{Refill: time.Second}},
		{"no refill", Config{Burst: 1}},
		{"negative refill", Config{Burst: 1, Refill: -time.Second}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%+v) did not panic", tt.cfg)
				}
			}()
			New(tt.cfg)
		})
	}
}

// TestTake: the budget, the retry delay, refill with the clock, GiveBack,
// and independence of addresses.
func TestTake(t *testing.T) {
	l := New(Config{Burst: 3, Refill: 6 * time.Second})
	const a = "192.0.2.1:1"
	for i := range 3 {
		if d, ok := l.Take(a, t0); !ok || d != 0 {
			t.Fatalf("take %d = %v, %v; want 0, true", i, d, ok)
		}
	}
	steps := []struct {
		name  string
		addr  string
		at    time.Duration
		give  bool // GiveBack(addr) before the Take
		retry time.Duration
		ok    bool
	}{
		{"over budget", a, 0, false, 6 * time.Second, false},
		{"other address", "192.0.2.2:1", 0, false, 0, true},
		{"same /64 is other than the IPv4", "[2001:db8::1]:1", 0, false, 0, true},
		{"partly refilled", a, 2 * time.Second, false, 4 * time.Second, false},
		{"refilled", a, 6 * time.Second, false, 0, true},
		{"given back", a, 6 * time.Second, true, 0, true},
		{"empty again", a, 6 * time.Second, false, 6 * time.Second, false},
		{"fully refilled, capped at the burst", a, time.Hour, false, 0, true},
	}
	for _, s := range steps {
		if s.give {
			l.GiveBack(s.addr)
		}
		d, ok := l.Take(s.addr, t0.Add(s.at))
		if d != s.retry || ok != s.ok {
			t.Fatalf("%s: Take = %v, %v; want %v, %v", s.name, d, ok, s.retry, s.ok)
		}
	}
	for i := range 2 {
		if _, ok := l.Take(a, t0.Add(time.Hour)); !ok {
			t.Fatalf("take %d after a full refill refused", i)
		}
	}
	if _, ok := l.Take(a, t0.Add(time.Hour)); ok {
		t.Fatal("refill exceeded the burst")
	}
	l.GiveBack("203.0.113.1:1") // untracked: nothing
	if n := l.Len(); n != 3 {
		t.Errorf("Len = %d, want 3", n)
	}
}

func TestSharesIPv6Prefix(t *testing.T) {
	l := New(Config{Burst: 2, Refill: time.Minute})
	for i, addr := range []string{"[2001:db8::1]:1", "[2001:db8::2]:2"} {
		if _, ok := l.Take(addr, t0); !ok {
			t.Fatalf("attempt %d refused", i)
		}
	}
	if _, ok := l.Take("[2001:db8::ffff]:3", t0); ok {
		t.Fatal("third attempt in the /64 allowed")
	}
	if _, ok := l.Take("[2001:db8:0:1::1]:4", t0); !ok {
		t.Fatal("another /64 refused")
	}
}

// TestShouldRecord: the first throttled refusal is recorded, the next ones
// within AuditEvery are counted, and the next recorded one carries the
// count; addresses are independent.
func TestShouldRecord(t *testing.T) {
	l := New(Config{Burst: 1, Refill: time.Minute})
	const a, b = "192.0.2.1:1", "192.0.2.2:1"
	for _, s := range []struct {
		name       string
		addr       string
		at         time.Duration
		record     bool
		unrecorded int
	}{
		{"first", a, 0, true, 0},
		{"within 10 s", a, time.Second, false, 0},
		{"other address", b, time.Second, true, 0},
		{"still within", a, 9 * time.Second, false, 0},
		{"again within", a, 9*time.Second + 999*time.Millisecond, false, 0},
		{"10 s on", a, 10 * time.Second, true, 3},
		{"just after", a, 11 * time.Second, false, 0},
		{"much later", a, time.Hour, true, 1},
		{"much later, none left out", a, 2 * time.Hour, true, 0},
	} {
		rec, n := l.ShouldRecord(s.addr, t0.Add(s.at))
		if rec != s.record || n != s.unrecorded {
			t.Fatalf("%s: ShouldRecord = %v, %d; want %v, %d", s.name, rec, n, s.record, s.unrecorded)
		}
	}
}

// TestBounded: the map of addresses stays bounded under a flood of
// distinct addresses.
func TestBounded(t *testing.T) {
	for _, tt := range []struct {
		name string
		max  int
		addr func(i int) string
	}{
		{"ipv4", 100, func(i int) string { return fmt.Sprintf("198.51.%d.%d:1", i/256, i%256) }},
		{"ipv6 /64s", 10, func(i int) string { return fmt.Sprintf("[2001:db8:%x::1]:1", i) }},
		{"garbage", 10, func(i int) string { return fmt.Sprintf("junk-%d", i) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := New(Config{Burst: 2, Refill: time.Minute, MaxEntries: tt.max})
			for i := range 10000 {
				l.Take(tt.addr(i), t0)
				if n := l.Len(); n > tt.max {
					t.Fatalf("after %d addresses the limiter tracks %d, bound %d", i+1, n, tt.max)
				}
			}
		})
	}
}

// TestEvictsAsGoodAsNewFirst: at the bound, a newcomer evicts the state
// as good as new (refilled, refusals recorded long enough ago) and keeps a
// drained address's and one with unrecorded refusals.
func TestEvictsAsGoodAsNewFirst(t *testing.T) {
	t.Run("drained kept", func(t *testing.T) {
		l := New(Config{Burst: 10, Refill: 6 * time.Second, MaxEntries: 10})
		for range 10 {
			l.Take("192.0.2.1:1", t0)
		}
		for i := range 9 {
			l.Take(fmt.Sprintf("198.51.100.%d:1", i), t0)
		}
		if _, ok := l.Take("192.0.2.1:1", t0.Add(30*time.Second)); !ok {
			t.Fatal("no attempt back after 30 s")
		}
		l.Take("203.0.113.1:1", t0.Add(30*time.Second)) // full: evicts
		if _, ok := l.addrs[Key("192.0.2.1:1")]; !ok || l.Len() != 2 {
			t.Errorf("after eviction: %d addresses, drained one kept = %v; want 2, true", l.Len(), ok)
		}
	})
	t.Run("unrecorded refusal kept", func(t *testing.T) {
		l := New(Config{Burst: 2, Refill: time.Minute, MaxEntries: 10})
		for i := range 10 {
			l.Take(fmt.Sprintf("198.51.100.%d:1", i), t0)
		}
		// 198.51.100.0 is throttled, and has a refusal not yet recorded.
		l.Take("198.51.100.0:1", t0)
		if _, ok := l.Take("198.51.100.0:1", t0); ok {
			t.Fatal("third attempt allowed")
		}
		if rec, _ := l.ShouldRecord("198.51.100.0:1", t0); !rec {
			t.Fatal("first throttled refusal not to be recorded")
		}
		if rec, _ := l.ShouldRecord("198.51.100.0:1", t0.Add(time.Second)); rec {
			t.Fatal("refusal within 10 s to be recorded")
		}
		if n := l.Len(); n != 10 {
			t.Fatalf("tracked %d, want 10", n)
		}
		// Two minutes on, every bucket is full again: a newcomer at the
		// bound evicts them all except the one whose refusal is still
		// unrecorded.
		later := t0.Add(2 * time.Minute)
		l.Take("203.0.113.9:1", later)
		if n := l.Len(); n != 2 {
			t.Fatalf("tracked %d after eviction, want 2 (the newcomer and the unrecorded refusal)", n)
		}
		if _, ok := l.addrs[Key("198.51.100.0:1")]; !ok {
			t.Fatal("the address with an unrecorded refusal was evicted")
		}
		if _, ok := l.Take("198.51.100.0:1", later); !ok {
			t.Fatal("refilled address refused")
		}
	})
	t.Run("idle past Forget dropped", func(t *testing.T) {
		l := New(Config{Burst: 1, Refill: time.Hour, MaxEntries: 2, Forget: time.Minute})
		l.Take("192.0.2.1:1", t0) // drained; refills only in an hour
		l.Take("192.0.2.2:1", t0)
		l.Take("192.0.2.3:1", t0.Add(2*time.Minute)) // full: both idle past Forget
		if n := l.Len(); n != 1 {
			t.Fatalf("tracked %d after eviction, want 1 (the newcomer)", n)
		}
	})
}

func BenchmarkTake(b *testing.B) {
	l := New(Config{Burst: 10, Refill: time.Second})
	addrs := make([]string, 1024)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("198.51.%d.%d:1", i/256, i%256)
	}
	now := t0
	for i := 0; b.Loop(); i++ {
		l.Take(addrs[i%len(addrs)], now)
	}
}
