// Package latency keeps recent latencies per key and answers quantiles
// over them, for hedging delays learnt from traffic ("The Tail at Scale",
// Dean and Barroso, CACM 2013: hedge after the 95th-percentile latency).
//
// A key's latencies go into log-spaced buckets, each 10% wider than the one
// before, from 50µs to over a minute: a quantile is known to within 10%,
// in constant memory. Buckets fill in windows of 1,000 latencies; a
// quantile reads the current window and the one before, so the answer
// follows a host that slows down or recovers within two windows.
package latency

import (
	"math"
	"sync"
	"time"
)

const (
	// MinSamples is how many latencies a key needs before Quantile answers.
	MinSamples = 50
	window     = 1000
	maxKeys    = 1024
	first      = 50 * time.Microsecond
	growth     = 1.1
	nBuckets   = 150 // first·growth^149 is about 74s
)

// bounds[i] is the upper bound of bucket i.
var bounds = func() (b [nBuckets]time.Duration) {
	for i := range b {
		b[i] = time.Duration(float64(first) * math.Pow(growth, float64(i)))
	}
	return b
}()

var logGrowth = math.Log(growth)

// bucket returns the index of the bucket holding d.
func bucket(d time.Duration) int {
	if d <= first {
		return 0
	}
	if d > bounds[nBuckets-1] {
		return nBuckets - 1
	}
	i := min(int(math.Ceil(math.Log(float64(d)/float64(first))/logGrowth)), nBuckets-1)
	// Rounding may put d one bucket low or high; bounds decide.
	for i > 0 && bounds[i-1] >= d {
		i--
	}
	for i < nBuckets-1 && bounds[i] < d {
		i++
	}
	return i
}

type sketch struct {
	cur, prev   [nBuckets]uint32
	nCur, nPrev int
}

// A Tracker keeps recent latencies per key. It holds at most 1,024 keys;
// past that, an arbitrary key is forgotten to make room. The zero Tracker
// is not usable; use NewTracker. A Tracker is safe for concurrent use.
type Tracker struct {
	mu   sync.Mutex
	keys map[string]*sketch
}

// NewTracker returns an empty Tracker.
func NewTracker() *Tracker { return &Tracker{keys: map[string]*sketch{}} }

// Observe records one latency for key. Latencies below 50µs count as
// 50µs, and above the last bucket's bound (74s) as that bound.
func (t *Tracker) Observe(key string, d time.Duration) {
	i := bucket(d)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.keys[key]
	if s == nil {
		if len(t.keys) >= maxKeys {
			for k := range t.keys {
				delete(t.keys, k)
				break
			}
		}
		s = &sketch{}
		t.keys[key] = s
	}
	if s.nCur == window {
		s.prev, s.nPrev = s.cur, s.nCur
		s.cur, s.nCur = [nBuckets]uint32{}, 0
	}
	s.cur[i]++
	s.nCur++
}

// Quantile returns the q-quantile (0 < q < 1) of key's recent latencies,
// rounded up to its bucket's upper bound, and false until key has
// MinSamples latencies.
func (t *Tracker) Quantile(key string, q float64) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.keys[key]
	if s == nil || s.nCur+s.nPrev < MinSamples {
		return 0, false
	}
	rank := uint32(math.Ceil(q * float64(s.nCur+s.nPrev)))
	var sum uint32
	for i := range nBuckets {
		sum += s.cur[i] + s.prev[i]
		if sum >= rank {
			return bounds[i], true
		}
	}
	return bounds[nBuckets-1], true
}

// Len returns the number of keys kept.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys)
}
