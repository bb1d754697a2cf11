package middleware

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
)

// A Budget limits retries to a share of traffic, per host, so that an
// outage does not turn into a retry storm (Envoy, Finagle, gRPC and the AWS
// SDKs converge on about 20%).
//
// Each logical request deposits ratio tokens into its key's bucket; each
// retry withdraws one. The bucket also earns perSecond tokens a second, so
// quiet clients can still retry, and holds at most perSecond + 10·ratio
// tokens (at least 1): a long healthy spell banks one second of reserve and
// ten requests' deposits, never a storm.
// A retry the bucket cannot pay for is refused with ReasonBudget. A token
// drawn for a retry that is then not made (the caller gave up during the
// wait, the body could not be replayed) is given back.
//
// A key's bucket starts full, so a new host may retry at once. A bucket
// that has filled up again is the same as a new one, so it is forgotten:
// a client that talks to many hosts keeps buckets only for those with
// recent retries, and never more than 4096 (past that, the least recently
// used are forgotten first, and start full again).
//
// Concurrency: a Budget is safe for concurrent use; share one across every
// Transport and front door of a process with WithBudget.
type Budget struct {
	ratio, perSecond, burst float64
	key                     func(*http.Request) string

	mu      sync.Mutex
	buckets map[string]*bucket
	sweepAt int // sweep the map when it grows to this size
}

// Bounds of the bucket map.
const (
	minSweep   = 64
	maxBuckets = 4096
)

type bucket struct {
	tokens float64
	last   time.Time
}

// NewBudget returns a Budget that allows retries of ratio (0 to 1) of
// requests plus perSecond retries a second, per key. key maps a request to
// its bucket; nil means the request's host (URL.Host). Suggested values:
// 0.2 and 10. Out-of-range values give an *OptionError.
func NewBudget(ratio, perSecond float64, key func(*http.Request) string) (*Budget, error) {
	if !(ratio >= 0 && ratio <= 1) {
		return nil, &OptionError{"NewBudget", ratio, "ratio must lie in [0, 1]"}
	}
	if !(perSecond >= 0) || math.IsInf(perSecond, 0) {
		return nil, &OptionError{"NewBudget", perSecond, "perSecond must be a finite number >= 0"}
	}
	if key == nil {
		key = hostKey
	}
	return &Budget{
		ratio: ratio, perSecond: perSecond, burst: math.Max(1, perSecond+10*ratio),
		key: key, buckets: map[string]*bucket{}, sweepAt: minSweep,
	}, nil
}

func hostKey(r *http.Request) string {
	if r.URL == nil {
		return ""
	}
	return r.URL.Host
}

func (b *Budget) String() string {
	return fmt.Sprintf("Budget(ratio=%g, perSecond=%g, burst=%g)", b.ratio, b.perSecond, b.burst)
}

// fill brings k's bucket up to now; b.mu is held.
func (b *Budget) fill(k string, now time.Time) *bucket {
	bk := b.buckets[k]
	if bk == nil {
		if len(b.buckets) >= b.sweepAt {
			b.sweep(now)
		}
		bk = &bucket{tokens: b.burst, last: now}
		b.buckets[k] = bk
		return bk
	}
	b.refill(bk, now)
	return bk
}

func (b *Budget) refill(bk *bucket, now time.Time) {
	if dt := now.Sub(bk.last); dt > 0 {
		bk.tokens = math.Min(b.burst, bk.tokens+dt.Seconds()*b.perSecond)
		bk.last = now
	}
}

// sweep forgets full buckets (a new bucket starts full, so nothing changes),
// then, if too many remain, the least recently used half; b.mu is held.
// It runs when the map has doubled since the last sweep, so its cost is
// spread over the insertions that grew the map.
func (b *Budget) sweep(now time.Time) {
	for k, bk := range b.buckets {
		b.refill(bk, now)
		if bk.tokens >= b.burst {
			delete(b.buckets, k)
		}
	}
	if len(b.buckets) >= maxBuckets/2 {
		type use struct {
			k    string
			last time.Time
		}
		uses := make([]use, 0, len(b.buckets))
		for k, bk := range b.buckets {
			uses = append(uses, use{k, bk.last})
		}
		slices.SortFunc(uses, func(x, y use) int { return x.last.Compare(y.last) })
		for _, u := range uses[:len(uses)-maxBuckets/4] {
			delete(b.buckets, u.k)
		}
	}
	b.sweepAt = min(max(minSweep, 2*len(b.buckets)), maxBuckets)
}

// level returns the tokens k's bucket holds now, without creating one.
func (b *Budget) level(req *http.Request, now time.Time) float64 {
	k := b.key(req)
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.buckets[k]
	if bk == nil {
		return b.burst
	}
	b.refill(bk, now)
	return bk.tokens
}

// size is the number of buckets kept.
func (b *Budget) size() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buckets)
}

// deposit records a new logical request.
func (b *Budget) deposit(req *http.Request, now time.Time) {
	k := b.key(req)
	b.mu.Lock()
	bk := b.fill(k, now)
	bk.tokens = math.Min(b.burst, bk.tokens+b.ratio)
	b.mu.Unlock()
}

// withdraw pays for one retry if it can, and returns the tokens left.
func (b *Budget) withdraw(req *http.Request, now time.Time) (left float64, ok bool) {
	k := b.key(req)
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.fill(k, now)
	if bk.tokens < 1 {
		return bk.tokens, false
	}
	bk.tokens--
	return bk.tokens, true
}

// refund returns the token of a retry that was paid for but not made.
func (b *Budget) refund(req *http.Request, now time.Time) float64 {
	k := b.key(req)
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.fill(k, now)
	bk.tokens = math.Min(b.burst, bk.tokens+1)
	return bk.tokens
}
