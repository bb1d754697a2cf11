// Package middleware is tank's core: the retry classifier, the retry
// policy, and a net/http RoundTripper that applies them.
//
// Every attempt ends in one Class. What makes tank safe is that it knows
// whether a failed request could have reached the server: an
// httptrace.ClientTrace (composed with the caller's own) records whether a
// connection was obtained for the attempt and its headers were written.
// The default rules:
//
//	not sent (refused, dial timeout, DNS temporary, TLS handshake cut)  retry, any method
//	not sent, permanent (certificate, DNS not found, bad scheme)         stop
//	sent, no answer (reset, EOF, timeout, malformed response)            retry only if replayable
//	429, 502, 503 (the server did no work)                               retry, any method
//	other 5xx except 501                                                 retry only if replayable
//	2xx, 3xx, 4xx, 501                                                   stop, return the response
//	the caller's context is done                                         stop at once
//
// A request is replayable when its method is GET, HEAD, OPTIONS, TRACE, PUT
// or DELETE, or when it carries a non-empty Idempotency-Key header. A
// response status outside 100-599 is treated as a server error (RFC 9110
// §15).
//
// The send state is evidence only when the wrapped transport reports it:
// net/http's transports fire httptrace events for every attempt that can
// reach the network. A transport that fires none (a mock, a recording
// RoundTripper, a wrapper that runs the request under a context of its own)
// leaves it unknown, and tank then treats a failure as "may have been sent"
// unless the error itself proves otherwise (a refused dial does).
//
// Waits use capped exponential backoff with full jitter, honour Retry-After
// (on 429 and 503) up to a cap, and are never scheduled past the caller's
// deadline: when a wait would end after it, tank returns what it has at once.
//
// Usage:
//
//	client := &http.Client{Transport: middleware.NewTransport(nil,
//		middleware.WithMaxAttempts(4),
//		middleware.WithBackoff(100*time.Millisecond, 2*time.Second),
//	)}
//	resp, err := client.Get("https://api.example.com/items")
//
// When retries end on a response, the Transport returns it with a nil
// error, as a RoundTripper must. When they end on a transport error, the
// error is an *ExhaustedError that unwraps to the last attempt's error and to
// the Reason retrying stopped (errors.Is(err, middleware.ReasonDeadline)).
//
// Hooks let observers (the tracing package, logs) see every attempt;
// a Classifier lets users judge attempts before the default rules.
//
// WithHedging and WithAdaptiveHedging send another copy of a slow request
// that is safe to send twice (replayable, with no body or with GetBody);
// the first copy to end the request wins and the others are cancelled.
// Copies are attempts: hooks see them, WithMaxAttempts counts them, and the
// retry budget pays for them. A POST without an Idempotency-Key is never
// hedged.
//
// # What net/http re-sends by itself
//
// When a reused keep-alive connection fails after the request was written
// and before the first response byte, net/http's HTTP/1 transport re-sends,
// on a fresh connection, a GET, HEAD, OPTIONS or TRACE request, or any
// request with an Idempotency-Key (a POST included); a PUT or DELETE comes
// back as an error, and tank retries it. Its HTTP/2 transport re-sends
// after REFUSED_STREAM, GOAWAY and PROTOCOL_ERROR. These happen inside one
// call of the wrapped RoundTripper: tank sees them as one attempt. For a
// request that is not replayable, tank hands net/http a request without
// GetBody, so net/http cannot re-send its body and tank judges the failure
// itself. A POST without a body needs no GetBody, so HTTP/2 can still
// re-send it after PROTOCOL_ERROR: a known gap.
//
// # Distrusting neighbours
//
// The wrapped transport is held to the RoundTripper contract, as net/http's
// Client holds it: a nil response with a nil error becomes an error
// (ErrNilResponse), a nil Body becomes http.NoBody, and a response returned
// beside an error is closed and ignored. Hooks and classifiers see each
// Attempt read-only: what they write to it (Header in AttemptStart aside) is
// undone when they return. Hooks.Enabled is asked once per request. A panic
// in the wrapped transport, a hook or a classifier is not recovered; with
// hedging, a panic in a copy's transport is raised on the caller's
// goroutine (or, once the request has ended, becomes that copy's error).
//
// # Concurrency
//
// A Transport is safe for concurrent use: its rules are fixed when it is
// built, and each request's state lives in its own RoundTrip call (or, with
// adapters/backoffretry, in the request's operation). Hooks and classifiers
// are called from many requests at once and must be safe for that. The
// hooks of one request never run at the same time; with hedging, the copies
// still in flight when the request ends are reaped on a goroutine of
// tank's, which runs their AttemptEnd and then RequestEnd, after RoundTrip
// has returned.
//
// # Design
//
// docs/design.md in the repository explains why tank decides as it does:
// the send state, what net/http re-sends by itself, waits, the retry
// budget, body replay and the distrust of neighbours.
package middleware
