package middleware

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// Defaults. DESIGN.md and the README explain each choice.
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

// A Policy is an immutable set of retry rules: classifiers, attempt caps,
// the wait schedule and bounds. Build one with NewPolicy; it is safe for
// concurrent use and may be shared by every front door of a process.
type Policy struct {
	maxAttempts  int
	groupCaps    [3]int // not sent, sent, status; 0 = no cap of its own
	initial, max time.Duration
	jitter       Jitter
	schedule     func() func(n int) (time.Duration, bool)
	retryAfter   time.Duration
	attemptTO    time.Duration
	bufferLimit  int64
	drainLimit   int64
	methods      map[string]bool
	anyStatus    statusSet
	replStatus   statusSet
	classifiers  []Classifier
	hooks        Hooks
	hasHooks     bool
	budget       *Budget
	attemptHdr   string
	autoKey      bool

	// Test seams: unexported, set only by this package's tests.
	now  func() time.Time
	rand func() float64
}

// Jitter selects how waits are randomised.
type Jitter uint8

const (
	// JitterFull waits a uniform random time in [0, min(max, initial·2^(n-1))).
	JitterFull Jitter = iota
	// JitterDecorrelated waits a uniform random time in [initial, 3·previous wait), capped at max.
	JitterDecorrelated
	// JitterNone waits exactly min(max, initial·2^(n-1)).
	JitterNone
)

// An Option configures a Policy (and so a Transport or an adapter).
// Options are applied in order; for a setting given twice the last wins.
type Option interface {
	apply(*Policy) error
}

type optionFunc func(*Policy) error

func (f optionFunc) apply(p *Policy) error { return f(p) }

// OptionError reports an option given a value it cannot take.
type OptionError struct {
	Option string // the option's name, such as "WithMaxAttempts"
	Value  any    // the value it was given
	Reason string // what is wrong with it
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("tank: %s(%v): %s", e.Option, e.Value, e.Reason)
}

// NewPolicy builds a Policy from the defaults and opts. It returns an
// *OptionError for the first option given a value it cannot take.
//
// Defaults: 3 attempts in total; waits with full jitter from 100ms doubling
// to at most 5s; Retry-After honoured up to 30s; bodies without GetBody
// kept for replay up to 1 MiB; retried responses drained up to 64 KiB; no attempt
// timeout; replayable methods GET, HEAD, OPTIONS, TRACE, PUT, DELETE;
// 429, 502, 503 retried for any method; other 5xx but 501 for replayable
// requests only.
func NewPolicy(opts ...Option) (*Policy, error) {
	p := &Policy{
		maxAttempts: defaultMaxAttempts,
		initial:     defaultInitial,
		max:         defaultMaxWait,
		retryAfter:  defaultRetryAfterCap,
		bufferLimit: defaultBufferLimit,
		drainLimit:  defaultDrainLimit,
		methods:     defaultMethods,
		anyStatus:   defaultAnyStatus,
		replStatus:  defaultReplStatus,
		now:         time.Now,
		rand:        rand.Float64,
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.apply(p); err != nil {
			return nil, err
		}
	}
	p.hasHooks = !p.hooks.empty()
	return p, nil
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

// WithMaxAttempts caps the attempts of one request, the first included.
// n must be at least 1; 1 disables retries. Default 3.
func WithMaxAttempts(n int) Option {
	return optionFunc(func(p *Policy) error {
		if n < 1 {
			return &OptionError{"WithMaxAttempts", n, "must be at least 1"}
		}
		p.maxAttempts = n
		return nil
	})
}

// WithGroupAttempts caps attempts per kind of failure, like urllib3's
// connect, read and status counters: notSent counts attempts that failed
// before a connection was obtained, sent those that failed after, status
// those answered with a retryable status. 0 leaves a group capped only by
// WithMaxAttempts. Negative values are an error. Default 0, 0, 0.
func WithGroupAttempts(notSent, sent, status int) Option {
	return optionFunc(func(p *Policy) error {
		if notSent < 0 || sent < 0 || status < 0 {
			return &OptionError{"WithGroupAttempts", [3]int{notSent, sent, status}, "must not be negative"}
		}
		p.groupCaps = [3]int{notSent, sent, status}
		return nil
	})
}

// WithBackoff sets the wait schedule: the wait after the n-th failed attempt
// is based on initial·2^(n-1), capped at max before jitter. initial 0 means
// no wait. Both must be non-negative, and initial at most max.
// Default 100ms, 5s.
func WithBackoff(initial, max time.Duration) Option {
	return optionFunc(func(p *Policy) error {
		if initial < 0 || max < 0 || initial > max {
			return &OptionError{"WithBackoff", [2]time.Duration{initial, max}, "want 0 <= initial <= max"}
		}
		p.initial, p.max, p.schedule = initial, max, nil
		return nil
	})
}

// WithJitter selects how waits are randomised. Default JitterFull.
func WithJitter(j Jitter) Option {
	return optionFunc(func(p *Policy) error {
		if j > JitterNone {
			return &OptionError{"WithJitter", j, "unknown jitter"}
		}
		p.jitter = j
		return nil
	})
}

// WithSchedule replaces the backoff with a schedule of the caller's:
// newSchedule runs once per logical request and returns a function giving
// the wait after the n-th failed attempt, or false to stop retrying. It lets
// front doors plug in other strategies (adapters/backoffretry does). A
// Retry-After still replaces the wait, and the deadline and caps still
// apply. Default: the backoff of WithBackoff and WithJitter.
func WithSchedule(newSchedule func() func(n int) (time.Duration, bool)) Option {
	return optionFunc(func(p *Policy) error {
		if newSchedule == nil {
			return &OptionError{"WithSchedule", nil, "must not be nil"}
		}
		p.schedule = newSchedule
		return nil
	})
}

// WithRetryAfterCap bounds the wait a Retry-After header (on 429 and 503)
// may ask for. A longer request is not honoured: the response is returned
// at once, with ReasonRetryAfter recorded. 0 means never wait for a
// Retry-After longer than 0. Negative is an error. Default 30s.
func WithRetryAfterCap(d time.Duration) Option {
	return optionFunc(func(p *Policy) error {
		if d < 0 {
			return &OptionError{"WithRetryAfterCap", d, "must not be negative"}
		}
		p.retryAfter = d
		return nil
	})
}

// WithAttemptTimeout bounds each attempt, up to the end of its response
// headers for retried responses and to the end of the body for the final
// one. 0 means no per-attempt bound (the caller's context still applies).
// Negative is an error. Default 0.
//
// A 101 Switching Protocols response is the exception: net/http hands over
// the raw connection as its body, and no context bounds reads from it
// (neither this timeout nor the caller's deadline); set deadlines on the
// connection itself.
func WithAttemptTimeout(d time.Duration) Option {
	return optionFunc(func(p *Policy) error {
		if d < 0 {
			return &OptionError{"WithAttemptTimeout", d, "must not be negative"}
		}
		p.attemptTO = d
		return nil
	})
}

// WithReplayableMethods sets the methods that are safe to send twice.
// A request with an Idempotency-Key (or X-Idempotency-Key) header is
// replayable whatever its method. Default GET, HEAD, OPTIONS, TRACE, PUT,
// DELETE.
func WithReplayableMethods(methods ...string) Option {
	return optionFunc(func(p *Policy) error {
		m := make(map[string]bool, len(methods))
		for _, s := range methods {
			if s == "" {
				return &OptionError{"WithReplayableMethods", methods, "empty method"}
			}
			m[s] = true
		}
		p.methods = m
		return nil
	})
}

// WithStatuses sets which response statuses are retried: anyMethod for every
// request (the server did no work), replayable for replayable requests only.
// Codes must lie in 100-599 and not be in both lists. Default anyMethod 429,
// 502, 503; replayable every other 5xx but 501.
func WithStatuses(anyMethod, replayable []int) Option {
	return optionFunc(func(p *Policy) error {
		a, r := newStatusSet(), newStatusSet()
		for _, c := range anyMethod {
			if c < 100 || c > 599 {
				return &OptionError{"WithStatuses", c, "status out of range 100-599"}
			}
			a.add(c)
		}
		for _, c := range replayable {
			if c < 100 || c > 599 || a.has(c) {
				return &OptionError{"WithStatuses", c, "status out of range or in both lists"}
			}
			r.add(c)
		}
		p.anyStatus, p.replStatus = a, r
		return nil
	})
}

// WithClassifier adds a classifier in front of the default rules. Several
// classifiers run in the order given; the first verdict other than Pass wins.
func WithClassifier(c Classifier) Option {
	return optionFunc(func(p *Policy) error {
		if c == nil {
			return &OptionError{"WithClassifier", nil, "must not be nil"}
		}
		p.classifiers = append(p.classifiers[:len(p.classifiers):len(p.classifiers)], c)
		return nil
	})
}

// WithHooks adds observers. Unlike other options, hooks accumulate: each
// call's hooks run after those of earlier calls.
func WithHooks(h Hooks) Option {
	return optionFunc(func(p *Policy) error {
		p.hooks = p.hooks.join(h)
		return nil
	})
}

// WithBufferLimit bounds how many bytes of a request body without GetBody
// are kept to replay it. tank never reads such a body ahead of the
// transport: it keeps the bytes the transport reads, and replays them on a
// retry before reading on. Once an attempt has read past the limit, the body
// cannot be sent again and retrying stops (ReasonBodyNotReplayable); an
// attempt that failed before reading it is still retried. 0 keeps nothing.
// Negative is an error. Default 1 MiB.
func WithBufferLimit(n int64) Option {
	return optionFunc(func(p *Policy) error {
		if n < 0 {
			return &OptionError{"WithBufferLimit", n, "must not be negative"}
		}
		p.bufferLimit = n
		return nil
	})
}

// WithDrainLimit bounds how many bytes of a retried response's body are read
// so its connection can be reused; past the limit the connection is closed.
// Negative is an error. Default 64 KiB.
func WithDrainLimit(n int64) Option {
	return optionFunc(func(p *Policy) error {
		if n < 0 {
			return &OptionError{"WithDrainLimit", n, "must not be negative"}
		}
		p.drainLimit = n
		return nil
	})
}

// WithAttemptHeader names a header that carries the attempt number on
// retries ("2", "3", ...), so servers can shed retries first (Envoy sends
// x-envoy-attempt-count). The first attempt is sent without it, untouched.
// "" (the default) sends none.
func WithAttemptHeader(name string) Option {
	return optionFunc(func(p *Policy) error {
		if name != "" && !validHeaderName(name) {
			return &OptionError{"WithAttemptHeader", name, "not a valid header name"}
		}
		p.attemptHdr = http.CanonicalHeaderKey(name)
		return nil
	})
}

// WithIdempotencyKeys makes tank add a random Idempotency-Key header to POST
// and PATCH requests that carry none, so they become replayable against
// servers that deduplicate by that header. The caller's request is not
// changed; every attempt carries the same key. Default false.
func WithIdempotencyKeys(on bool) Option {
	return optionFunc(func(p *Policy) error {
		p.autoKey = on
		return nil
	})
}

// validHeaderName reports whether s is an RFC 9110 token (a field name).
func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// needsKey reports whether WithIdempotencyKeys applies to req.
func (p *Policy) needsKey(req *http.Request) bool {
	return p.autoKey && (req.Method == http.MethodPost || req.Method == http.MethodPatch) && !hasKey(req.Header)
}

// hooksOn reports whether req is to be observed by the policy's hooks.
func (p *Policy) hooksOn(req *http.Request) bool {
	return p.hasHooks && (p.hooks.Enabled == nil || p.hooks.Enabled(req))
}

// replayable reports whether req may be sent twice.
func (p *Policy) replayable(req *http.Request) bool {
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
func (p *Policy) statusClass(code int) Class {
	switch {
	case code < 100 || code > 599:
		return ClassServerError
	case p.anyStatus.has(code):
		if code == http.StatusTooManyRequests {
			return ClassThrottled
		}
		return ClassUnavailable
	case p.replStatus.has(code):
		return ClassServerError
	}
	return ClassFinal
}

// mayRetryStatus is the success path's one test: could code be retried?
func (p *Policy) mayRetryStatus(code int) bool {
	return p.anyStatus.has(code) || p.replStatus.has(code) || code < 100 || code > 599
}
