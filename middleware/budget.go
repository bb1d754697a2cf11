package middleware

import (
	"fmt"
	"math"
	"net/http"
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
// A retry the bucket cannot pay for is refused with ReasonBudget.
//
// Concurrency: a Budget is safe for concurrent use; share one across every
// Transport and front door of a process with WithBudget.
type Budget struct {
	ratio, perSecond, burst float64
	key                     func(*http.Request) string

	mu      sync.Mutex
	buckets map[string]*bucket
}

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
		key = func(r *http.Request) string { return r.URL.Host }
	}
	return &Budget{
		ratio: ratio, perSecond: perSecond, burst: math.Max(1, perSecond+10*ratio),
		key: key, buckets: map[string]*bucket{},
	}, nil
}

// WithBudget makes retries draw on b. Default: no budget.
func WithBudget(b *Budget) Option {
	return optionFunc(func(p *Policy) error {
		p.budget = b
		return nil
	})
}

func (b *Budget) String() string {
	return fmt.Sprintf("Budget(ratio=%g, perSecond=%g, burst=%g)", b.ratio, b.perSecond, b.burst)
}

// fill brings k's bucket up to now; b.mu is held.
func (b *Budget) fill(k string, now time.Time) *bucket {
	bk := b.buckets[k]
	if bk == nil {
		bk = &bucket{tokens: b.burst, last: now}
		b.buckets[k] = bk
		return bk
	}
	if dt := now.Sub(bk.last); dt > 0 {
		bk.tokens = math.Min(b.burst, bk.tokens+dt.Seconds()*b.perSecond)
		bk.last = now
	}
	return bk
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
