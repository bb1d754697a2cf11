package middleware

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Defaults. The README and docs/design.md explain each choice.
const (
	defaultMaxAttempts   = 3
	defaultInitial       = 100 * time.Millisecond
	defaultMaxWait       = 5 * time.Second
	defaultRetryAfterCap = 30 * time.Second
	defaultBufferLimit   = 1 << 20
	defaultDrainLimit    = 64 << 10
	idempotencyKey       = "Idempotency-Key"
	idempotencyKeyAlt    = "X-Idempotency-Key"
	retryAfterHeader     = "Retry-After"
)

// A policy is an immutable set of retry rules: classifiers, attempt caps,
// the wait schedule and bounds, built once from a front door's options. It
// is safe for concurrent use; per-request state lives in a run.
type policy struct {
	maxAttempts      int
	groupCaps        [3]int // not sent, sent, status; 0 = no cap of its own
	initial, maxWait time.Duration
	backoffSet       bool // WithBackoff was given
	jitterSet        bool // WithJitter was given
	jitter           Jitter
	schedule         func() func(n int) (time.Duration, bool)
	retryAfter       time.Duration
	attemptTimeout   time.Duration
	bufferLimit      int64
	drainLimit       int64
	methods          map[string]bool
	anyMethodStatus  statusSet
	replayableStatus statusSet
	classifiers      []Classifier
	hooks            Hooks
	hasHooks         bool
	budget           *Budget
	attemptHdr       string
	autoKey          bool
	hedge            *hedging // nil: no hedging

	// Test seams: unexported, set only by this package's tests.
	now  func() time.Time
	rand func() float64
}

// newPolicy builds a policy from the defaults and opts. It returns an
// *OptionError for the first option given a value it cannot take, whatever
// the order of the options.
//
// Defaults: 3 attempts in total; waits with full jitter from 100ms doubling
// to at most 5s; Retry-After honoured up to 30s; bodies without GetBody
// kept for replay up to 1 MiB; retried responses drained up to 64 KiB; no attempt
// timeout; replayable methods GET, HEAD, OPTIONS, TRACE, PUT, DELETE;
// 429, 502, 503 retried for any method; other 5xx but 501 for replayable
// requests only.
func newPolicy(opts ...Option) (*policy, error) {
	p := &policy{
		maxAttempts:      defaultMaxAttempts,
		initial:          defaultInitial,
		maxWait:          defaultMaxWait,
		retryAfter:       defaultRetryAfterCap,
		bufferLimit:      defaultBufferLimit,
		drainLimit:       defaultDrainLimit,
		methods:          defaultMethods,
		anyMethodStatus:  defaultAnyStatus,
		replayableStatus: defaultReplStatus,
		now:              time.Now,
		rand:             rand.Float64,
	}
	return p.with(opts)
}

// with returns a copy of p with opts applied on top. p is not changed:
// options replace slices and maps rather than write to them. A schedule and
// a backoff conflict only when both are given in opts; either one given in
// opts replaces the other from p.
func (p *policy) with(opts []Option) (*policy, error) {
	q := *p
	q.backoffSet, q.jitterSet, q.schedule = false, false, nil
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.apply(&q); err != nil {
			return nil, err
		}
	}
	if q.schedule != nil && (q.backoffSet || q.jitterSet) {
		return nil, &OptionError{"WithSchedule", "with WithBackoff or WithJitter", "the schedule replaces the backoff: give one or the other"}
	}
	if q.schedule == nil && !q.backoffSet && !q.jitterSet {
		q.schedule = p.schedule
	}
	q.hasHooks = !q.hooks.empty()
	return &q, nil
}

var defaultMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodOptions: true,
	http.MethodTrace: true, http.MethodPut: true, http.MethodDelete: true,
}

var (
	defaultAnyStatus  = newStatusSet(429, 502, 503)
	defaultReplStatus = func() statusSet {
		var s statusSet
		for c := 500; c < 600; c++ {
			if c != 501 && !defaultAnyStatus.has(c) {
				s.add(c)
			}
		}
		return s
	}()
)

// statusSet is a bit set over the status codes 100-599.
type statusSet [10]uint64

func newStatusSet(codes ...int) statusSet {
	var s statusSet
	for _, c := range codes {
		s.add(c)
	}
	return s
}

func (s *statusSet) add(c int) { s[c/64] |= 1 << (c % 64) }

func (s *statusSet) has(c int) bool { return c >= 0 && c < 600 && s[c/64]&(1<<(c%64)) != 0 }

// needsKey reports whether WithIdempotencyKeys applies to req.
func (p *policy) needsKey(req *http.Request) bool {
	return p.autoKey && (req.Method == http.MethodPost || req.Method == http.MethodPatch) && !hasKey(req.Header)
}

// hooksOn reports whether req is to be observed by the policy's hooks.
func (p *policy) hooksOn(req *http.Request) bool {
	return p.hasHooks && (p.hooks.Enabled == nil || p.hooks.Enabled(req))
}

// replayable reports whether req may be sent twice.
func (p *policy) replayable(req *http.Request) bool {
	if p.methods[req.Method] || (req.Method == "" && p.methods[http.MethodGet]) {
		return true
	}
	return hasKey(req.Header)
}

// hasKey reports whether h carries a non-empty idempotency key: an empty
// one gives the server nothing to deduplicate on.
func hasKey(h http.Header) bool {
	return nonEmpty(h[idempotencyKey]) || nonEmpty(h[idempotencyKeyAlt])
}

func nonEmpty(v []string) bool {
	return len(v) > 0 && strings.TrimSpace(v[0]) != ""
}

// statusClass names a response status. A status outside 100-599 is invalid,
// and RFC 9110 §15 says a client should treat it as a 5xx: a server error,
// retried only for a replayable request.
func (p *policy) statusClass(code int) Class {
	switch {
	case code < 100 || code > 599:
		return ClassServerError
	case p.anyMethodStatus.has(code):
		if code == http.StatusTooManyRequests {
			return ClassThrottled
		}
		return ClassUnavailable
	case p.replayableStatus.has(code):
		return ClassServerError
	}
	return ClassFinal
}

// mayRetryStatus is the success path's one test: could code be retried?
func (p *policy) mayRetryStatus(code int) bool {
	return p.anyMethodStatus.has(code) || p.replayableStatus.has(code) || code < 100 || code > 599
}

// deposit credits the retry budget, if any, with a new logical request.
func (p *policy) deposit(req *http.Request) {
	if p.budget != nil {
		p.budget.deposit(req, p.now())
	}
}

// defaultPolicy serves the zero Transport.
var defaultPolicy = sync.OnceValue(func() *policy {
	p, _ := newPolicy()
	return p
})

// fastPath reports whether req's first attempt needs nothing from tank but
// (for a request that is not replayable) its send state: no observers, no
// per-attempt bound, no group caps, and a body net/http can produce again.
func (p *policy) fastPath(req *http.Request, hooksOn bool) bool {
	return !hooksOn && len(p.classifiers) == 0 && p.attemptTimeout == 0 && p.groupCaps == [3]int{} &&
		!p.needsKey(req) &&
		(req.Body == nil || req.Body == http.NoBody || req.GetBody != nil)
}
