// Package backoffretry joins tank and cenkalti/backoff v4
// (github.com/cenkalti/backoff/v4), in both directions, with one classifier.
//
// tank judges, backoff loops: New turns a request into a backoff operation
// and a BackOff that follows tank's decisions.
//
//	op, b := backoffretry.New(req, nil, middleware.WithMaxAttempts(4))
//	resp, err := backoff.RetryWithData(op, backoff.WithContext(b, req.Context()))
//
// backoff.Retry and backoff.RetryNotify work too, through a closure that
// keeps the response:
//
//	var resp *http.Response
//	err := backoff.RetryNotify(func() (err error) { resp, err = op(); return err }, b, notify)
//
// backoff schedules, tank judges: Schedule makes any backoff.BackOff the
// wait schedule of a middleware.Transport (or of New):
//
//	t := middleware.NewTransport(nil, middleware.WithMaxAttempts(6),
//		backoffretry.Schedule(func() backoff.BackOff {
//			return backoff.WithMaxRetries(backoff.NewExponentialBackOff(), 5)
//		}))
//
// # What New gives, and what it cannot
//
// The operation makes one attempt per call through the engine of
// middleware.Transport, so the
// decisions, the send-state tracing, body replay, the draining of retried
// responses, Retry-After, the caps and the hooks are the Transport's. The
// final response comes back intact with a nil error, and a give-up comes
// back as a *middleware.ExhaustedError that unwraps to the last attempt's
// error and to the middleware.Reason: the backoff.Permanent wrapper never
// reaches the caller (backoff#177), and tank never ends retries through
// ExponentialBackOff's MaxElapsedTime (backoff#159).
//
// backoff owns the loop and the sleep, which costs the following, against
// the Transport:
//
//   - A cancellation during a sleep makes backoff v4 return the bare
//     ctx.Err(): the last attempt's error and the reason are lost
//     (backoff#181). The Transport returns an *ExhaustedError with both.
//     tank still ends the request when the context ends (through
//     context.AfterFunc): the body prepared for the next attempt is closed
//     and Hooks.RequestEnd fires, on the goroutine of that AfterFunc rather
//     than the caller's; a later call of the operation returns the
//     *ExhaustedError.
//   - When a wrapper such as backoff.WithMaxRetries cuts the loop while tank
//     wants a retry, the caller gets the retry error of the last attempt, and
//     the request only ends (RequestEnd, body closed) when its context ends;
//     with a context that never ends, never. Let tank's policy bound the
//     attempts (middleware.WithMaxAttempts), not a BackOff wrapper.
//   - The sleep is backoff's timer, not tank's wait. tank has already refused
//     a wait that would end after the caller's deadline (it returns the
//     response at once), so an honest sleep always ends before it.
//   - If an operation closure of the caller's turns a final response into
//     an error, b stops at once: tank does not retry what it judged final.
//
// With Schedule, tank asks the BackOff for a wait only when there is no
// usable Retry-After, so Retry-After waits do not count toward
// backoff.WithMaxRetries; tank's own cap (WithMaxAttempts, default 3) still
// bounds the attempts, so raise it when the BackOff should decide. The
// BackOff is built and Reset when the request first needs a wait, so an
// ExponentialBackOff's MaxElapsedTime counts from the first failure.
//
// # Concurrency
//
// Each call of New returns an operation and a BackOff for one request; use
// them on one goroutine, with one backoff loop. Schedule calls newBackOff
// once per logical request and never shares a BackOff between requests, so
// a Transport built with it is safe for concurrent use as long as
// newBackOff returns a new BackOff each time.
package backoffretry
