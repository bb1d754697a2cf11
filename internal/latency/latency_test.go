package latency

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	for _, d := range []time.Duration{-1, 0, 1, first, first + 1, time.Millisecond, 999 * time.Millisecond, time.Second, time.Minute, time.Hour} {
		i := bucket(d)
		if bounds[i] < d && i != nBuckets-1 {
			t.Errorf("bucket(%v) = %d, whose bound %v is below it", d, i, bounds[i])
		}
		if i > 0 && bounds[i-1] >= d {
			t.Errorf("bucket(%v) = %d, but bucket %d (bound %v) holds it", d, i, i-1, bounds[i-1])
		}
	}
}

func TestQuantileWithinTenPercent(t *testing.T) {
	tr := NewTracker()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		tr.Observe("h", time.Duration(rng.Int64N(int64(100*time.Millisecond))))
	}
	for _, q := range []float64{0.5, 0.9, 0.95, 0.99} {
		got, ok := tr.Quantile("h", q)
		// Uniform over [0, 100ms): the q-quantile is about q·100ms.
		want := time.Duration(q * float64(100*time.Millisecond))
		if !ok || got < want*95/100 || got > want*115/100 {
			t.Errorf("q%.2f = %v, %v; want about %v (buckets are 10%% wide)", q, got, ok, want)
		}
	}
}

func TestNoAnswerBeforeMinSamples(t *testing.T) {
	tr := NewTracker()
	for i := range MinSamples {
		if _, ok := tr.Quantile("h", 0.95); ok {
			t.Fatalf("answered after %d latencies; want none before %d", i, MinSamples)
		}
		tr.Observe("h", time.Millisecond)
	}
	if d, ok := tr.Quantile("h", 0.95); !ok || d < time.Millisecond || d > 1100*time.Microsecond {
		t.Errorf("after %d latencies of 1ms: %v, %v; want about 1ms", MinSamples, d, ok)
	}
	if _, ok := tr.Quantile("other", 0.95); ok {
		t.Error("a key never seen answered")
	}
}

// A host that slows down is followed within two windows.
func TestFollowsAChange(t *testing.T) {
	tr := NewTracker()
	for range 3 * window {
		tr.Observe("h", time.Millisecond)
	}
	for range 2 * window {
		tr.Observe("h", 100*time.Millisecond)
	}
	if d, _ := tr.Quantile("h", 0.5); d < 100*time.Millisecond || d > 110*time.Millisecond {
		t.Errorf("median after the change = %v; want about 100ms", d)
	}
}

func TestKeysBounded(t *testing.T) {
	tr := NewTracker()
	for i := range 3 * maxKeys {
		tr.Observe(fmt.Sprint("host", i), time.Millisecond)
		if n := tr.Len(); n > maxKeys {
			t.Fatalf("%d keys kept; want at most %d", n, maxKeys)
		}
	}
}
