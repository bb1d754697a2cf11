package jitter

import (
	"math"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ms = time.Millisecond

func TestExponential(t *testing.T) {
	for _, tt := range []struct {
		n            int
		initial, max time.Duration
		want         time.Duration
	}{
		{1, 100 * ms, 5 * time.Second, 100 * ms},
		{2, 100 * ms, 5 * time.Second, 200 * ms},
		{6, 100 * ms, 5 * time.Second, 3200 * ms},
		{7, 100 * ms, 5 * time.Second, 5 * time.Second},
		{1000, 100 * ms, 5 * time.Second, 5 * time.Second}, // no overflow
		{0, 100 * ms, 5 * time.Second, 100 * ms},
		{3, 0, 5 * time.Second, 0},
		{3, 100 * ms, 0, 0},
		{2, time.Duration(math.MaxInt64/2 + 1), time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)},
		{1, 10 * time.Second, 5 * time.Second, 5 * time.Second}, // cap before jitter
	} {
		if got := Exponential(tt.n, tt.initial, tt.max); got != tt.want {
			t.Errorf("Exponential(%d, %v, %v) = %v; want %v", tt.n, tt.initial, tt.max, got, tt.want)
		}
	}
}

func TestFull(t *testing.T) {
	for _, tt := range []struct {
		n    int
		draw float64
		want time.Duration
	}{
		{1, 0, 0},
		{1, 0.5, 50 * ms},
		{3, 0.25, 100 * ms},
		{10, 0.5, 2500 * ms}, // half the cap
		{10, 0.999999, 5*time.Second - 5*time.Microsecond},
	} {
		got := Full(tt.n, 100*ms, 5*time.Second, tt.draw)
		if got != tt.want {
			t.Errorf("Full(%d, draw %v) = %v; want %v", tt.n, tt.draw, got, tt.want)
		}
		if ceil := Exponential(tt.n, 100*ms, 5*time.Second); got < 0 || got >= ceil && ceil > 0 {
			t.Errorf("Full(%d, draw %v) = %v; want in [0, %v)", tt.n, tt.draw, got, ceil)
		}
	}
}

func TestDecorrelated(t *testing.T) {
	for _, tt := range []struct {
		prev time.Duration
		draw float64
		want time.Duration
	}{
		{0, 0, 100 * ms},                      // first wait: [initial, 3·initial)
		{0, 0.5, 200 * ms},                    // 100 + 0.5·(300-100)
		{1 * time.Second, 0.5, 1550 * ms},     // 100 + 0.5·(3000-100)
		{4 * time.Second, 0.9, 4510 * ms},     // 3·prev capped at max before the draw
		{4 * time.Second, 1, 5 * time.Second}, // never above max
		{time.Duration(math.MaxInt64), 0.5, 100*ms + (5*time.Second-100*ms)/2}, // 3·prev overflows: hi = max
	} {
		got := Decorrelated(tt.prev, 100*ms, 5*time.Second, tt.draw)
		if got != tt.want {
			t.Errorf("Decorrelated(%v, draw %v) = %v; want %v", tt.prev, tt.draw, got, tt.want)
		}
		if got < 100*ms || got > 5*time.Second {
			t.Errorf("Decorrelated(%v, draw %v) = %v; want in [100ms, 5s]", tt.prev, tt.draw, got)
		}
	}
	if got := Decorrelated(time.Second, 0, time.Second, 0.5); got != 0 {
		t.Errorf("Decorrelated with initial 0 = %v; want 0", got)
	}
}
