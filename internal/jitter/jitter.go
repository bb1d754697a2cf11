// Package jitter holds the pure backoff shapes: each takes the random draw
// as an argument (a float64 in [0, 1)), so callers own the randomness.
package jitter

import "time"

// Exponential returns initial·2^(n-1) capped at max, for the wait after the
// n-th failed attempt (n ≥ 1). The cap is applied before any jitter.
func Exponential(n int, initial, max time.Duration) time.Duration {
	if initial <= 0 || max <= 0 {
		return 0
	}
	d := initial
	for i := 1; i < n; i++ {
		if d >= max/2 {
			return max
		}
		d *= 2
	}
	if d > max {
		return max
	}
	return d
}

// Full returns a wait drawn uniformly from [0, Exponential(n, initial, max)).
func Full(n int, initial, max time.Duration, draw float64) time.Duration {
	return time.Duration(draw * float64(Exponential(n, initial, max)))
}

// Decorrelated returns a wait drawn uniformly from [initial, 3·prev), capped
// at max ("decorrelated jitter"). prev is the previous wait, or 0 before the
// first one.
func Decorrelated(prev, initial, max time.Duration, draw float64) time.Duration {
	if initial <= 0 || max <= 0 {
		return 0
	}
	if prev < initial {
		prev = initial
	}
	hi := 3 * prev
	if hi > max || hi < prev { // the second test catches overflow
		hi = max
	}
	d := initial + time.Duration(draw*float64(hi-initial))
	if d > max {
		return max
	}
	return d
}
