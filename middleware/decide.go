package middleware

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/tankhttp/tank/internal/jitter"
	"github.com/tankhttp/tank/internal/retryafter"
	"github.com/tankhttp/tank/internal/sendstate"
)

// wasSent reports whether an attempt may have reached the server. HTTP/2
// reports WroteHeaders from its writer goroutine, and returns without
// waiting for it when the attempt's context ends: an attempt cut by its own
// timeout (timeoutCtx, nil without one) after a connection was obtained may
// be on the wire, so it counts as sent. (The caller's cancellation stops
// retries whatever the state.)
func wasSent(st *sendstate.State, timeoutCtx context.Context) bool {
	if st == nil {
		return false
	}
	return st.Sent() || (st.Conn() && timeoutCtx != nil && timeoutCtx.Err() != nil)
}

// decide applies the classifiers, then the default rules.
func (r *run) decide(a *Attempt, g group) (Verdict, Reason) {
	if g == groupCanceled {
		return Stop, ReasonCanceled
	}
	for _, c := range r.p.classifiers {
		if v := a.classify(c); v == Retry || v == Stop {
			return v, ReasonClassifier
		}
	}
	switch g {
	case groupNotSent:
		if a.Class == ClassRefusedStream {
			return Retry, ReasonNotProcessed
		}
		return Retry, ReasonNotSent
	case groupPermanent:
		return Stop, ReasonPermanent
	case groupStatusAny:
		return Retry, ReasonNotProcessed
	case groupSent, groupStatusReplayable:
		if r.replayable {
			return Retry, ReasonReplayable
		}
		return Stop, ReasonNotReplayable
	}
	return Stop, ReasonFinal
}

func capIndex(g group) int {
	switch g {
	case groupNotSent:
		return 0
	case groupSent:
		return 1
	case groupStatusAny, groupStatusReplayable:
		return 2
	}
	return -1
}

// scheduleRetry turns a Retry verdict into a wait, or into a Stop when a cap,
// the Retry-After cap or the caller's deadline forbids another attempt.
func (r *run) scheduleRetry(a *Attempt) {
	p := r.p
	stop := func(reason Reason) { a.Verdict, a.Reason, a.Sleep, a.SleepSource = Stop, reason, 0, "" }
	if r.n >= p.maxAttempts {
		stop(ReasonAttempts)
		return
	}
	if i := capIndex(a.Class.group()); i >= 0 && p.groupCaps[i] > 0 && r.groupN[i] >= p.groupCaps[i] {
		stop(ReasonAttempts)
		return
	}
	if r.hasBody && (r.getBody == nil || r.rec != nil && !r.rec.Replayable()) {
		stop(ReasonBodyNotReplayable)
		return
	}
	d, src, ok := r.retryAfter(a)
	if !ok {
		stop(ReasonRetryAfter)
		return
	}
	if src == "" {
		if d, ok = r.backoff(); !ok {
			stop(ReasonAttempts)
			return
		}
		src = SleepBackoff
	}
	// A hedged round's dropped copies may have asked for more.
	if r.holdTooLong {
		stop(ReasonRetryAfter)
		return
	}
	if r.hold > d {
		d, src = r.hold, SleepRetryAfter
	}
	if dl, has := r.req.Context().Deadline(); has && !p.now().Add(d).Before(dl) {
		stop(ReasonDeadline)
		return
	}
	if p.budget != nil {
		left, ok := p.budget.withdraw(r.req, p.now())
		a.BudgetTokens = left
		if !ok {
			stop(ReasonBudget)
			return
		}
		r.paid = true
	}
	a.Sleep, a.SleepSource = d, src
	if src == SleepRetryAfter {
		r.prevWait = d // decorrelated jitter builds on the wait actually taken
	}
}

// retryAfter reads a Retry-After header on 429 and 503. ok is false when the
// server asks for more than the cap. src is "" when there is no usable header.
func (r *run) retryAfter(a *Attempt) (d time.Duration, src SleepSource, ok bool) {
	resp := a.Response
	if resp == nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return 0, "", true
	}
	v, has := resp.Header[retryAfterHeader]
	if !has || len(v) == 0 {
		return 0, "", true
	}
	d, err := retryafter.Parse(v[0], r.p.now())
	if err != nil {
		a.RetryAfterErr = fmt.Errorf("%w %q", ErrRetryAfter, v[0])
		return 0, "", true
	}
	if d > r.p.retryAfter {
		return 0, "", false
	}
	return d, SleepRetryAfter, true
}

// backoff gives the wait after the current attempt from the schedule.
func (r *run) backoff() (time.Duration, bool) {
	p := r.p
	if p.schedule != nil {
		if r.schedule == nil {
			r.schedule = p.schedule()
		}
		d, ok := r.schedule(r.n)
		if d < 0 {
			d = 0
		}
		return d, ok
	}
	var d time.Duration
	switch p.jitter {
	case JitterFull:
		d = jitter.Full(r.n, p.initial, p.maxWait, p.rand())
	case JitterDecorrelated:
		d = jitter.Decorrelated(r.prevWait, p.initial, p.maxWait, p.rand())
	default:
		d = jitter.Exponential(r.n, p.initial, p.maxWait)
	}
	r.prevWait = d
	return d, true
}
