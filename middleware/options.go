package middleware

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tankhttp/tank/internal/latency"
)

// Jitter selects how waits are randomised.
type Jitter uint8

const (
	// JitterFull waits a uniform random time in [0, min(ceiling, initial·2^(n-1))).
	JitterFull Jitter = iota
	// JitterDecorrelated waits a uniform random time in [initial, 3·previous wait), capped at ceiling.
	JitterDecorrelated
	// JitterNone waits exactly min(ceiling, initial·2^(n-1)).
	JitterNone
)

// An Option configures a front door: a Transport, restyretry.Apply or
// backoffretry.New. Options do not depend on their order. A setting given
// twice takes the last value, except WithClassifier and WithHooks, which
// add up (classifiers run, and hooks are called, in the order given).
// WithSchedule replaces WithBackoff and WithJitter: giving it with either
// is an *OptionError.
type Option interface {
	apply(*policy) error
}

type optionFunc func(*policy) error

func (f optionFunc) apply(p *policy) error { return f(p) }

// OptionError reports an option given a value it cannot take.
type OptionError struct {
	Option string // the option's name, such as "WithMaxAttempts"
	Value  any    // the value it was given
	Reason string // what is wrong with it
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("tank: %s(%v): %s", e.Option, e.Value, e.Reason)
}

// WithMaxAttempts caps the attempts of one request, the first included.
// n must be at least 1; 1 disables retries. Default 3.
func WithMaxAttempts(n int) Option {
	return optionFunc(func(p *policy) error {
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
	return optionFunc(func(p *policy) error {
		if notSent < 0 || sent < 0 || status < 0 {
			return &OptionError{"WithGroupAttempts", [3]int{notSent, sent, status}, "must not be negative"}
		}
		p.groupCaps = [3]int{notSent, sent, status}
		return nil
	})
}

// WithBackoff sets the wait schedule: the wait after the n-th failed attempt
// is based on initial·2^(n-1), capped at ceiling before jitter. initial 0 means
// no wait. Both must be non-negative, and initial at most ceiling.
// Default 100ms, 5s.
func WithBackoff(initial, ceiling time.Duration) Option {
	return optionFunc(func(p *policy) error {
		if initial < 0 || ceiling < 0 || initial > ceiling {
			return &OptionError{"WithBackoff", [2]time.Duration{initial, ceiling}, "want 0 <= initial <= ceiling"}
		}
		p.initial, p.maxWait, p.backoffSet = initial, ceiling, true
		return nil
	})
}

// WithJitter selects how waits are randomised. Default JitterFull.
func WithJitter(j Jitter) Option {
	return optionFunc(func(p *policy) error {
		if j > JitterNone {
			return &OptionError{"WithJitter", j, "unknown jitter"}
		}
		p.jitter, p.jitterSet = j, true
		return nil
	})
}

// WithSchedule replaces the backoff with a schedule of the caller's:
// newSchedule runs once per logical request and returns a function giving
// the wait after the n-th failed attempt, or false to stop retrying. It lets
// front doors plug in other strategies (adapters/backoffretry does). A
// Retry-After still replaces the wait, and the deadline and caps still
// apply. It replaces WithBackoff and WithJitter: giving it with either, in
// any order, is an *OptionError. Default: the backoff of WithBackoff and
// WithJitter.
func WithSchedule(newSchedule func() func(n int) (time.Duration, bool)) Option {
	return optionFunc(func(p *policy) error {
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
	return optionFunc(func(p *policy) error {
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
	return optionFunc(func(p *policy) error {
		if d < 0 {
			return &OptionError{"WithAttemptTimeout", d, "must not be negative"}
		}
		p.attemptTimeout = d
		return nil
	})
}

// WithReplayableMethods sets the methods that are safe to send twice.
// A request with an Idempotency-Key (or X-Idempotency-Key) header is
// replayable whatever its method. Default GET, HEAD, OPTIONS, TRACE, PUT,
// DELETE.
func WithReplayableMethods(methods ...string) Option {
	return optionFunc(func(p *policy) error {
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
	return optionFunc(func(p *policy) error {
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
		p.anyMethodStatus, p.replayableStatus = a, r
		return nil
	})
}

// WithClassifier adds a classifier in front of the default rules. Several
// classifiers run in the order given; the first verdict other than Pass wins.
func WithClassifier(c Classifier) Option {
	return optionFunc(func(p *policy) error {
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
	return optionFunc(func(p *policy) error {
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
	return optionFunc(func(p *policy) error {
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
	return optionFunc(func(p *policy) error {
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
	return optionFunc(func(p *policy) error {
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
	return optionFunc(func(p *policy) error {
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

// WithBudget makes retries draw on b. Default: no budget.
func WithBudget(b *Budget) Option {
	return optionFunc(func(p *policy) error {
		p.budget = b
		return nil
	})
}

// WithHedging sends another copy of a slow request: when no copy has
// received response headers delay after the last copy was sent, tank sends
// one more, up to maxHedges copies beyond the first in flight at once. The
// first copy whose outcome ends the request wins; the others are cancelled,
// their responses drained (up to WithDrainLimit) and closed.
//
// Only requests that are safe to send twice are hedged: replayable methods,
// or a request carrying a non-empty Idempotency-Key, whose body is absent or
// can be produced again by GetBody (http.NewRequest sets it for
// bytes.Buffer, bytes.Reader and strings.Reader bodies). Any other request
// is sent as without hedging.
//
// Every copy is an attempt: hooks see it (Attempt.Hedge marks the extra
// copies), WithMaxAttempts counts it, and, with WithBudget, each hedge draws
// one token from the retry budget; with the bucket empty no hedge is sent
// and the request waits for the copies in flight, asking the bucket again
// after twice the wait each time. A copy that fails while
// another is in flight is judged by the same rules; when its verdict is
// Retry, it is dropped, the others carry on and no more hedges are sent for
// them (failures are for the retry rules to answer, with their waits and
// Retry-After); when the last copy in flight fails, retrying proceeds as
// without hedging: a wait, then a new first copy, which may be hedged in
// turn. docs/design.md has the full rules.
//
// delay must be positive; maxHedges must not be negative, and 0 turns
// hedging off. Hedging does not apply to adapters/backoffretry, which runs
// one operation at a time: there, this option is an *OptionError.
// Default: off.
func WithHedging(delay time.Duration, maxHedges int) Option {
	return optionFunc(func(p *policy) error {
		if delay <= 0 {
			return &OptionError{"WithHedging", delay, "delay must be positive"}
		}
		if maxHedges < 0 {
			return &OptionError{"WithHedging", maxHedges, "maxHedges must not be negative"}
		}
		p.hedge = nil
		if maxHedges > 0 {
			p.hedge = &hedging{delay: delay, max: maxHedges}
		}
		return nil
	})
}

// WithAdaptiveHedging is WithHedging with a delay learnt per host: a copy
// is sent once the first copy has waited longer than the given quantile
// (0.95 is the usual choice: about 5% more requests) of the latencies, up to
// the response headers, of the host's recent first copies. Until a host has
// answered 50 requests, its requests are not hedged. The latencies are kept
// by the returned Option: give the same Option value to every front door
// that should share what was learnt.
//
// quantile must lie in (0, 1); maxHedges as in WithHedging.
func WithAdaptiveHedging(quantile float64, maxHedges int) Option {
	h := &hedging{quantile: quantile, max: maxHedges, latency: latency.NewTracker()}
	return optionFunc(func(p *policy) error {
		if !(quantile > 0 && quantile < 1) {
			return &OptionError{"WithAdaptiveHedging", quantile, "quantile must lie in (0, 1)"}
		}
		if maxHedges < 0 {
			return &OptionError{"WithAdaptiveHedging", maxHedges, "maxHedges must not be negative"}
		}
		p.hedge = nil
		if maxHedges > 0 {
			p.hedge = h
		}
		return nil
	})
}
