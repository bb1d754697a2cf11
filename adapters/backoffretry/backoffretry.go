package backoffretry

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/tankhttp/tank/internal/frontdoor"
	"github.com/tankhttp/tank/middleware"
)

// New prepares req to be retried by a backoff v4 loop with tank's judgement:
// the operation makes one attempt through next (nil: http.DefaultTransport)
// and classifies it; the BackOff waits what tank's policy (configured by
// opts) decided for that attempt.
//
//	op, b := backoffretry.New(req, nil)
//	resp, err := backoff.RetryWithData(op, backoff.WithContext(b, req.Context()))
//
// The operation returns the final response with a nil error when the
// request ends on a response (whatever its status), and
// backoff.Permanent(*middleware.ExhaustedError) when it ends on a transport
// error or the caller's cancellation; backoff unwraps it, so callers get the
// *middleware.ExhaustedError. When tank asks for another attempt, the
// operation returns a nil response and an error that unwraps to the
// attempt's transport error (if any) and to the middleware.Reason of the
// retry; that attempt's response has been drained and closed.
//
// New takes ownership of req.Body, as a RoundTrip does. When opts are
// invalid, req.Body is closed at once and the first call of the operation
// returns backoff.Permanent(*middleware.OptionError).
//
// Use op and b for this one request, with one backoff loop, on one
// goroutine. b's NextBackOff returns the wait tank chose after the last
// attempt (its policy schedule or a Retry-After, already checked against
// the caps and the caller's deadline), and backoff.Stop once the request
// has ended; it never stops while tank wants a retry. Reset does nothing.
// If req's context ends while backoff sleeps, backoff returns ctx.Err();
// tank ends the request then (the package doc says how).
func New(req *http.Request, next http.RoundTripper, opts ...middleware.Option) (backoff.OperationWithData[*http.Response], backoff.BackOff) {
	s := &state{}
	run, err := frontdoor.NewRun[middleware.Option, *middleware.Attempt](req, next, opts...)
	if err != nil {
		s.err = backoff.Permanent(err)
		return s.op, s
	}
	s.ctx, s.run = req.Context(), run
	return s.op, s
}

// state is what one request's operation and BackOff share.
type state struct {
	mu    sync.Mutex // the operation, NextBackOff and the cancel watcher
	ctx   context.Context
	run   frontdoor.Run[*middleware.Attempt]
	err   error // returned by every call once the request has ended
	sleep time.Duration
	stop  func() bool // stops the cancel watcher
}

var errEnded = errors.New("backoffretry: operation called again after its request ended")

func (s *state) op() (*http.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	a := s.run.Step()
	if a.Verdict == middleware.Retry {
		s.sleep = a.Sleep
		if s.stop == nil && s.ctx.Done() != nil {
			s.stop = context.AfterFunc(s.ctx, s.canceled)
		}
		return nil, newRetryError(a)
	}
	return s.end()
}

// end ends the request once its Run has stopped.
func (s *state) end() (*http.Response, error) {
	if s.stop != nil {
		s.stop()
	}
	s.err = backoff.Permanent(errEnded)
	resp, err := s.run.Result()
	if err != nil {
		s.err = backoff.Permanent(err)
		return nil, s.err
	}
	return resp, nil
}

// canceled runs when the caller's context ends while the request waits for
// another attempt (backoff's sleep, or a loop cut short): the Run is ended
// there, so the next attempt's body is closed and Hooks.RequestEnd fires.
// A later call of the operation returns the *middleware.ExhaustedError.
func (s *state) canceled() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil && !s.run.Wait(0) {
		s.stop = nil
		s.end()
	}
}

// NextBackOff returns tank's wait after the last attempt, or backoff.Stop
// once the request has ended.
func (s *state) NextBackOff() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return backoff.Stop
	}
	return s.sleep
}

// Reset does nothing: the schedule is tank's, kept in the request's Run.
func (s *state) Reset() {}

// retryError describes an attempt tank retries.
type retryError struct {
	attempt int
	reason  middleware.Reason
	class   middleware.Class
	status  string
	err     error
}

func newRetryError(a *middleware.Attempt) *retryError {
	e := &retryError{attempt: a.Number, reason: a.Reason, class: a.Class, err: a.Err}
	if a.Response != nil {
		e.status = a.Response.Status
	}
	return e
}

func (e *retryError) Error() string {
	msg := "backoffretry: attempt " + strconv.Itoa(e.attempt) + " will be retried (" + string(e.class) + ", " + string(e.reason) + ")"
	switch {
	case e.err != nil:
		msg += ": " + e.err.Error()
	case e.status != "":
		msg += ": " + e.status
	}
	return msg
}

// Unwrap returns the attempt's error, if any, and the reason for the retry.
func (e *retryError) Unwrap() []error {
	if e.err != nil {
		return []error{e.err, e.reason}
	}
	return []error{e.reason}
}

// Schedule makes backoff's BackOff the wait schedule of a tank policy:
// tank still judges every attempt, and a Retry-After, the caps and the
// caller's deadline still apply.
//
//	t := middleware.NewTransport(nil, backoffretry.Schedule(func() backoff.BackOff {
//		return backoff.NewExponentialBackOff()
//	}))
//
// newBackOff runs once per logical request, when the request first needs a
// wait from the schedule; the BackOff it returns is Reset and then asked
// for each wait. backoff.Stop ends the retries (middleware.ReasonAttempts).
// A BackOff is never shared between requests or goroutines, so a stateful
// one such as ExponentialBackOff is safe here. A nil newBackOff makes the
// policy fail with WithSchedule's *middleware.OptionError; a nil BackOff
// stops retrying.
func Schedule(newBackOff func() backoff.BackOff) middleware.Option {
	if newBackOff == nil {
		return middleware.WithSchedule(nil)
	}
	return middleware.WithSchedule(func() func(int) (time.Duration, bool) {
		b := newBackOff()
		if b != nil {
			b.Reset()
		}
		return func(int) (time.Duration, bool) {
			if b == nil {
				return 0, false
			}
			d := b.NextBackOff()
			if d == backoff.Stop {
				return 0, false
			}
			return d, true
		}
	})
}
