// Package jitter holds the pure backoff shapes: each takes the random draw
// as an argument (a float64 in [0, 1)), so callers own the randomness.
package jitter

import "time"

// Exponential returns initial·2^(n-1) capped at ceiling, for the wait after the
// n-th failed attempt (n ≥ 1). The cap is applied before any jitter.
func Exponential(n int, initial, ceiling time.Duration) time.Duration {
	if initial <= 0 || ceiling <= 0 {
		return 0
	}
	d := initial
	for i := 1; i < n; i++ {
		if d >= ceiling/2 {
			return ceiling
		}
		d *= 2
	}
	if d > ceiling {
		return ceiling
	}
	return d
}

// Full returns a wait drawn uniformly from [0, Exponential(n, initial, ceiling)).
func Full(n int, initial, ceiling time.Duration, draw float64) time.Duration {
	return time.Duration(draw * float64(Exponential(n, initial, ceiling)))
}

// Decorrelated returns a wait drawn uniformly from [initial, 3·prev), capped
// at ceiling ("decorrelated jitter"). prev is the previous wait, or 0 before the
// first one.
func Decorrelated(prev, initial, ceiling time.Duration, draw float64) time.Duration {
	if initial <= 0 || ceiling <= 0 {
		return 0
	}
	if prev < initial {
		prev = initial
	}
	hi := 3 * prev
	if hi > ceiling || hi < prev { // the second test catches overflow
		hi = ceiling
	}
	d := initial + time.Duration(draw*float64(hi-initial))
	if d > ceiling {
		return ceiling
	}
	return d
}
