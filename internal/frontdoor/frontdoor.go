// Package frontdoor lets a front door outside package middleware drive
// tank's retry engine one attempt at a time (adapters/backoffretry, whose
// loop belongs to cenkalti/backoff), while the engine stays unexported:
// users see one API, the options and the types they read.
//
// It also lets a front door read back the middleware.Outcome a request's
// context carries (adapters/restyretry reports the attempt count in resty's
// Request.Attempt), without a getter in middleware's API.
//
// Package middleware registers its engine and that accessor here when it is
// initialised; front doors import middleware, so both are registered before
// they can call NewRun or OutcomeOf.
package frontdoor

import (
	"context"
	"net/http"
	"time"
)

// Run is one logical request under a policy. A is *middleware.Attempt.
//
// Concurrency: a Run belongs to one request and is not safe for concurrent
// use.
type Run[A any] interface {
	// Step makes the next attempt and judges it. After a Retry verdict the
	// attempt's response has been drained and closed, and the caller waits
	// the attempt's Sleep before the next Step. After a Stop verdict,
	// Result gives the outcome.
	Step() A
	// Wait sleeps d unless the caller's context ends first; then it ends
	// the request (Result reports the cancellation) and returns false.
	// Wait(0) only checks the context.
	Wait(d time.Duration) bool
	// Result returns the outcome once a Step has said Stop or Wait has
	// returned false: the last response with a nil error, or the error.
	Result() (*http.Response, error)
}

var newRun any

// Register installs the engine. O is middleware.Option, A *middleware.Attempt.
func Register[O, A any](f func(req *http.Request, next http.RoundTripper, opts ...O) (Run[A], error)) {
	newRun = f
}

// NewRun starts a logical request: req is sent through next (nil:
// http.DefaultTransport) by calls to Step. It takes ownership of req.Body,
// as a RoundTrip does, and closes it at once when opts are invalid (the
// error is then a *middleware.OptionError).
func NewRun[O, A any](req *http.Request, next http.RoundTripper, opts ...O) (Run[A], error) {
	return newRun.(func(*http.Request, http.RoundTripper, ...O) (Run[A], error))(req, next, opts...)
}

var outcomeOf any

// RegisterOutcome installs the accessor of the Outcome a context carries
// (middleware.WithOutcome). T is middleware.Outcome.
func RegisterOutcome[T any](f func(ctx context.Context) *T) {
	outcomeOf = f
}

// OutcomeOf returns the *middleware.Outcome that tank fills in for the
// requests made with ctx (the one middleware.WithOutcome put there last),
// or nil. A front door reads it back after a round trip: adapters/restyretry
// reports the attempt count in resty's Request.Attempt.
func OutcomeOf[T any](ctx context.Context) *T {
	return outcomeOf.(func(context.Context) *T)(ctx)
}
