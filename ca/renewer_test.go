package ca

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestNextRenewal(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		life time.Duration
		want time.Duration
	}{
		{"30 days", 720 * time.Hour, 480 * time.Hour},
		{"one day", 24 * time.Hour, 16 * time.Hour},
		{"five minutes", 5 * time.Minute, 200 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := NextRenewal(nb, nb.Add(tt.life)).Sub(nb); got != tt.want {
				t.Errorf("NextRenewal(lifetime %v) = +%v, want +%v", tt.life, got, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	min, max := 10*time.Second, time.Hour
	for _, tt := range []struct {
		attempt int
		r       float64
		want    time.Duration
	}{
		{1, 0, 5 * time.Second},
		{1, 0.999999, 10 * time.Second},
		{2, 0, 10 * time.Second},
		{3, 0.5, 30 * time.Second},
		{10, 0, 30 * time.Minute}, // capped at max, then jittered down
		{100, 0.999999, time.Hour},
	} {
		got := Backoff(tt.attempt, tt.r, min, max).Round(time.Second)
		if got != tt.want {
			t.Errorf("Backoff(%d, %v) = %v, want %v", tt.attempt, tt.r, got, tt.want)
		}
	}
}

// fakeClock is a clock whose After fires only when the test advances it.
type fakeClock struct {
	now   time.Time
	waits chan time.Duration
	fire  chan time.Time
}

func newFakeClock(t time.Time) *fakeClock {
	return &fakeClock{now: t, waits: make(chan time.Duration), fire: make(chan time.Time)}
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.waits <- d
	return c.fire
}

// advance waits for the renewer to ask for a wait, checks its length, moves
// the clock by it and fires.
func (c *fakeClock) advance(t *testing.T, want time.Duration) {
	t.Helper()
	select {
	case d := <-c.waits:
		if d != want {
			t.Fatalf("renewer waits %v, want %v", d, want)
		}
		c.now = c.now.Add(d)
		c.fire <- c.now
	case <-time.After(10 * time.Second):
		t.Fatal("renewer did not wait")
	}
}

// TestRenewerSchedule runs the renewal loop on an injected clock: renew at
// two thirds, back off exponentially (with jitter 0.5) while the CA fails,
// and go back to two thirds after a success. Nothing sleeps.
func TestRenewerSchedule(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := newFakeClock(start)
	life := 30 * time.Hour
	fails := 3
	calls := 0
	r := &Renewer{
		Now: clk.Now, After: clk.After, Rand: func() float64 { return 0.5 },
		MinBackoff: 10 * time.Second, MaxBackoff: time.Minute,
		Renew: func(context.Context) (time.Time, time.Time, error) {
			calls++
			if calls <= fails {
				return time.Time{}, time.Time{}, errors.New("CA unreachable")
			}
			return clk.now, clk.now.Add(life), nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, start, start.Add(life)) }()

	clk.advance(t, 20*time.Hour)          // two thirds of 30h
	clk.advance(t, 7500*time.Millisecond) // attempt 1: 10s · (0.5 + 0.25)
	clk.advance(t, 15*time.Second)        // attempt 2: 20s · 0.75
	clk.advance(t, 30*time.Second)        // attempt 3: 40s · 0.75
	clk.advance(t, 20*time.Hour)          // renewed: two thirds of the new 30h
	// The next wait is asked for only after the fifth renewal returned.
	if d := <-clk.waits; d != 20*time.Hour {
		t.Errorf("after a renewal the renewer waits %v, want 20h", d)
	}
	if calls != 5 {
		t.Errorf("Renew called %d times, want 5", calls)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

// TestRenewerOverdue renews at once a certificate past two thirds.
func TestRenewerOverdue(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := newFakeClock(start)
	renewed := make(chan struct{}, 1)
	r := &Renewer{
		Now: clk.Now, After: clk.After, Rand: func() float64 { return 0 },
		Renew: func(context.Context) (time.Time, time.Time, error) {
			renewed <- struct{}{}
			return clk.now, clk.now.Add(3 * time.Hour), nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, start.Add(-10*time.Hour), start.Add(time.Hour))
	select {
	case <-renewed:
	case <-time.After(10 * time.Second):
		t.Fatal("an overdue certificate was not renewed at once")
	}
	clk.advance(t, 2*time.Hour)
}

// TestRenewerGivesUp: a permanent refusal (a revoked device) ends Run at
// once, and a certificate that expires while the CA is unreachable ends it
// at expiry.
func TestRenewerGivesUp(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	revoked := errors.New("revoked")
	t.Run("permanent", func(t *testing.T) {
		clk := newFakeClock(start)
		r := &Renewer{
			Now: clk.Now, After: clk.After, Rand: func() float64 { return 0 },
			Renew:     func(context.Context) (time.Time, time.Time, error) { return time.Time{}, time.Time{}, revoked },
			Permanent: func(err error) bool { return errors.Is(err, revoked) },
		}
		done := make(chan error, 1)
		go func() { done <- r.Run(context.Background(), start, start.Add(3*time.Hour)) }()
		clk.advance(t, 2*time.Hour)
		if err := <-done; !errors.Is(err, revoked) {
			t.Errorf("Run = %v, want the permanent refusal", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		clk := newFakeClock(start)
		r := &Renewer{
			Now: clk.Now, After: clk.After, Rand: func() float64 { return 0.5 },
			MinBackoff: 20 * time.Minute, MaxBackoff: time.Hour,
			Renew: func(context.Context) (time.Time, time.Time, error) {
				return time.Time{}, time.Time{}, errors.New("unreachable")
			},
		}
		done := make(chan error, 1)
		go func() { done <- r.Run(context.Background(), start, start.Add(3*time.Hour)) }()
		clk.advance(t, 2*time.Hour)    // two thirds
		clk.advance(t, 15*time.Minute) // attempt 1: 20m · 0.75
		clk.advance(t, 30*time.Minute) // attempt 2: 40m · 0.75
		clk.advance(t, 15*time.Minute) // attempt 3 would wait 45m: capped at expiry
		if err := <-done; !errors.Is(err, ErrCertificateExpired) {
			t.Errorf("Run = %v, want ErrCertificateExpired", err)
		}
	})
}
