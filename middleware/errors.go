package middleware

import (
	"errors"
	"fmt"
)

// ErrNilResponse is returned (wrapped, with the transport's type) when the
// wrapped RoundTripper returns neither a response nor an error. The request
// may have been sent, so tank retries it only if it is replayable.
var ErrNilResponse = errors.New("tank: wrapped RoundTripper returned a nil *http.Response and a nil error")

// ErrRetryAfter matches Attempt.RetryAfterErr: the response's Retry-After
// header was neither delta-seconds nor an HTTP-date.
var ErrRetryAfter = errors.New("tank: malformed Retry-After header")

// ExhaustedError is returned when a request ends on a transport error (or
// the caller's cancellation) rather than on a response. It unwraps to the
// last attempt's error, to the Reason retrying stopped, and, when the caller
// gave up, to the context's cause.
//
// Err holds the last attempt's error, also when the caller gave up during
// the wait after that attempt. It is nil when the last attempt got a
// response: a status that was to be retried, whose response has been
// drained and closed before the caller gave up during the wait.
type ExhaustedError struct {
	Attempts int    // attempts made, the first included
	Reason   Reason // why retrying stopped
	Err      error  // the last attempt's error, or nil when it got a response (see the type's doc)
	cause    error
}

func (e *ExhaustedError) Error() string {
	s := "attempts"
	if e.Attempts == 1 {
		s = "attempt"
	}
	msg := fmt.Sprintf("tank: gave up after %d %s (%s)", e.Attempts, s, string(e.Reason))
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

// Unwrap returns the last error, the reason, and the context's cause.
func (e *ExhaustedError) Unwrap() []error {
	errs := make([]error, 0, 3)
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	errs = append(errs, e.Reason)
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// BodyError reports a request body that could not be produced again for a
// retry (its GetBody failed).
type BodyError struct {
	Err error
}

func (e *BodyError) Error() string {
	return "tank: request body cannot be replayed: " + e.Err.Error()
}

func (e *BodyError) Unwrap() error { return e.Err }
