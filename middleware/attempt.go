package middleware

import (
	"net/http"
	"time"
)

// Verdict is a classifier's answer for one attempt.
type Verdict uint8

const (
	// Pass means "no opinion": the next classifier in the chain decides,
	// and the default rules decide last.
	Pass Verdict = iota
	// Retry asks for another attempt. The policy may still refuse it (attempt
	// caps, deadline, Retry-After cap, budget, body not replayable).
	Retry
	// Stop ends the request with this attempt's outcome.
	Stop
)

func (v Verdict) String() string {
	switch v {
	case Retry:
		return "retry"
	case Stop:
		return "stop"
	}
	return "pass"
}

// A Reason says why an attempt was retried or why retrying stopped.
// Reasons are stable strings; they are also errors, so a give-up error can
// be tested with errors.Is(err, middleware.ReasonDeadline).
type Reason string

// Reasons for a retry.
const (
	ReasonNotSent      Reason = "not_sent"      // no connection was obtained
	ReasonNotProcessed Reason = "not_processed" // 429/502/503 or REFUSED_STREAM: the server did no work
	ReasonReplayable   Reason = "replayable"    // the request is idempotent or carries an Idempotency-Key
)

// Reasons for a stop.
const (
	ReasonFinal             Reason = "final"                // a final response (2xx, 3xx, 4xx, 501)
	ReasonPermanent         Reason = "permanent"            // an error no retry can fix (certificate, DNS not found, ...)
	ReasonNotReplayable     Reason = "not_replayable"       // may have been processed, and the request is not replayable
	ReasonCanceled          Reason = "canceled"             // the caller's context is done
	ReasonAttempts          Reason = "attempts_exhausted"   // the total or per-group attempt cap was reached
	ReasonDeadline          Reason = "deadline"             // the wait would end after the caller's deadline
	ReasonRetryAfter        Reason = "retry_after_too_long" // Retry-After asked for more than the cap
	ReasonBodyNotReplayable Reason = "body_not_replayable"  // the request body cannot be sent again
	ReasonClassifier        Reason = "classifier"           // a user classifier decided
	ReasonBudget            Reason = "budget_exhausted"     // the retry budget refused the retry
	ReasonSuperseded        Reason = "superseded"           // another copy of a hedged request ended it first; this one was cancelled
)

// Error makes a Reason usable as a sentinel error. It is the Reason's label,
// so %s, %v and log/slog print the same stable string as String.
func (r Reason) Error() string { return string(r) }

// String returns the Reason's stable label, such as "not_replayable".
func (r Reason) String() string { return string(r) }

// A SleepSource says where a wait came from, in Attempt.SleepSource.
type SleepSource string

// Sources of a wait.
const (
	SleepBackoff    SleepSource = "backoff"     // the backoff schedule
	SleepRetryAfter SleepSource = "retry_after" // the response's Retry-After header
)

// An Attempt is one try of a logical request: what was sent, what came back,
// how tank classified it and what it decided.
//
// Hooks and classifiers receive the same *Attempt; they must not keep it
// after they return. To them it is read-only, except Header in
// Hooks.AttemptStart: whatever else a hook or classifier writes to it is
// undone when it returns, so no observer can change a decision, a wait or
// what the next observer sees. A classifier decides through its Verdict.
type Attempt struct {
	// Request is the caller's request (for a hedged request, a copy of it
	// made when RoundTrip began: cancelled copies may be reaped after the
	// caller has reused its own). Treat it as read-only.
	Request *http.Request
	// Header holds the headers this attempt sends. In Hooks.AttemptStart it is
	// a private copy the hook may change (to inject trace context, say).
	Header http.Header
	// Number counts attempts from 1.
	Number int
	// Slept is the total time slept between attempts before this one.
	Slept time.Duration
	// Hedge reports that this attempt is an extra copy sent by WithHedging
	// while an earlier copy was still in flight.
	Hedge bool

	// Response is the attempt's response, or nil. Its body is still unread
	// when classifiers and AttemptEnd run; do not read or close it.
	Response *http.Response
	// Err is the attempt's transport error, or nil.
	Err error
	// Sent reports whether the request may have reached the server: a
	// connection was obtained for it and its headers were written, unless
	// the error proves otherwise (REFUSED_STREAM, say). When the transport
	// reported nothing on the attempt, only the error can prove it unsent:
	// unknown counts as sent. An attempt cut by WithAttemptTimeout after a
	// connection was obtained counts as sent.
	Sent bool
	// Replayable reports whether sending the request twice is safe: its
	// method is idempotent, or it carries an Idempotency-Key header.
	Replayable bool
	// Class names what happened.
	Class Class

	// Verdict is Retry or Stop once the attempt is judged.
	Verdict Verdict
	// Reason says why.
	Reason Reason
	// Sleep is the wait before the next attempt (when Verdict is Retry).
	// When the caller gives up during that wait, the last attempt becomes
	// Stop with ReasonCanceled, and Sleep is the time actually waited
	// (Hooks.RequestEnd sees it so).
	Sleep time.Duration
	// SleepSource is SleepBackoff or SleepRetryAfter, or "" with no wait.
	SleepSource SleepSource
	// BudgetTokens is what the retry budget holds after this attempt's
	// decision, or -1 when the policy has no budget.
	BudgetTokens float64
	// RetryAfterErr is set when the response carried a Retry-After header
	// that could not be parsed (errors.Is(err, ErrRetryAfter)); tank then
	// fell back to its backoff.
	RetryAfterErr error
}

// A Classifier judges an attempt before the default rules do. It returns
// Pass to leave the decision to the next classifier. It runs after tank has
// set a.Class, a.Sent and a.Replayable. The caller's cancellation is judged
// before any classifier: a done context always stops.
type Classifier func(a *Attempt) Verdict
