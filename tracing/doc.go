// Package tracing shows every attempt of a tank request in OpenTelemetry:
// one CLIENT span per attempt, following the stable HTTP client semantic
// conventions, plus tank's own facts (the class, the decision and its
// reason, the wait that followed), and per-attempt metrics. It uses only the
// OpenTelemetry API; the program installs the SDK and exporters it wants.
//
// Usage:
//
//	otel.SetTextMapPropagator(propagation.TraceContext{})
//	client := &http.Client{Transport: middleware.NewTransport(nil, tracing.With())}
//
// The same option works with every front door:
// restyretry.Apply(c, tracing.With()) and backoffretry.New(req, nil,
// tracing.With()). Providers and the propagator default to the otel
// globals, resolved when Hooks (or With) is called; the global ones forward
// to whatever the program installs later.
//
// # Spans
//
// Each attempt is a CLIENT span named by its method ("GET"; "HTTP" for a
// method the conventions do not know), started before the attempt is sent
// and ended when tank has judged it: once the response headers are in (the
// body is not waited for) or the transport failed. Its context is injected
// into that attempt's request headers with the propagator, so the server's
// span is a child of the attempt that reached it. The wait after an
// attempt is the gap before the next attempt span, and is recorded on the
// attempt that caused it.
//
// Attempts are siblings under an INTERNAL span named "{method} (tank)"
// that tank opens for the logical request, under the span in the caller's
// context if there is one: a retried request is one trace, and its summary
// (tank.request.*) is in it whether or not the caller had a span
// (WithRequestSpan(false) turns that span off).
//
// A redirect is one trace too. http.Client follows a redirect with a new
// RoundTrip whose Request.Response is the response that redirected; tank
// finds the earlier hop through it, opens the next hop's request span as a
// child of the earlier one's when the caller has no span, and
// http.request.resend_count goes on counting across hops, since the HTTP
// semantic conventions count redirects as resends.
//
// Semantic-convention attributes of an attempt span: http.request.method
// (and http.request.method_original), server.address, server.port,
// url.full, http.response.status_code, error.type and
// http.request.resend_count (absent on the first attempt, then 1, 2, ...).
// url.full never carries credentials (they become REDACTED:REDACTED), and
// the values of the query parameters AWSAccessKeyId, Signature, sig and
// X-Goog-Signature become REDACTED. No header or body value is recorded.
//
// error.type is the status code ("503") for a response of 400 or more, and
// tank's middleware.Class ("refused", "reset", "timeout", ...) for a
// transport error; such attempts have status Error (with the transport
// error's text as description). The INTERNAL span gets the same
// error.type and status from its last attempt only, so a request that
// succeeded after retries is not an error.
//
// tank's attributes all live under "tank.":
//
//	attribute                     on        type    value
//	tank.attempt.class            attempt   string  middleware.Class: "unavailable", "refused", "final", ...
//	tank.attempt.decision         attempt   string  "retry" or "stop"
//	tank.attempt.reason           attempt   string  middleware.Reason: "not_processed", "final", "attempts_exhausted", ...
//	tank.attempt.sleep            attempt   float   seconds tank waits before the next attempt (retries only)
//	tank.attempt.sleep_source     attempt   string  "backoff" or "retry_after" (retries only)
//	tank.attempt.budget_tokens    attempt   float   tokens left in the retry budget (only with a budget)
//	tank.attempt.hedge            attempt   bool    true on an extra copy sent by WithHedging (absent otherwise)
//	tank.request.attempts         request   int     attempts made, every hedged copy included
//	tank.request.outcome          request   string  the last attempt's middleware.Reason
//	tank.request.slept            request   float   seconds waited between attempts in total
//	tank.request.winner           request   int     hedged requests: the number of the copy that ended the request
//
// The request attributes are on tank's INTERNAL span, which also carries
// the method, server and url.full attributes of the request.
//
// When the caller gives up during a wait, the attempt span keeps the wait
// that was planned (tank.attempt.sleep, with decision "retry": true when it
// was decided), and the request span tells how it ended: outcome
// "canceled", error.type "canceled", status Error with the context's cause
// as description, and tank.request.slept counting the time actually waited.
//
// # With otelhttp
//
// otelhttp makes one CLIENT span per RoundTrip it sees. Beside tank, that
// is one span too many, whichever wraps the other: with tank outside,
// every attempt is two nested CLIENT spans, and the server's parent (the
// inner one) has no resend count; with otelhttp outside, a CLIENT span
// covers the whole logical request, waits included, and its
// http.client.request.duration means something else than tank's under the
// same name. Filter tells otelhttp to stand aside for what tank traces:
//
//	inner := otelhttp.NewTransport(base, otelhttp.WithFilter(tracing.Filter()))
//	client := &http.Client{Transport: middleware.NewTransport(inner, tracing.With())}
//
// or, with otelhttp outside,
//
//	client := &http.Client{Transport: otelhttp.NewTransport(
//		middleware.NewTransport(base, tracing.With()), otelhttp.WithFilter(tracing.Filter()))}
//
// Either way each physical attempt is one CLIENT span, tank's, carrying
// http.request.resend_count and tank.attempt.*, the server's span is its
// child, and http.client.request.duration is recorded once per attempt.
// Give Filter the options given to With (the same providers): it stands
// otelhttp aside whenever tank's tracing is on for a request, so if tank's
// tracer is a no-op while its metrics are on, neither records a span.
// Requests tank does not trace (no SDK installed, say) still go through
// otelhttp as usual. With otelhttp outside tank and the filter, no metric
// covers the whole logical request, waits included: a dashboard built on
// otelhttp's http.client.request.duration then reads tank's, per attempt.
// Without the filter, otelhttp outside tank also starts a new trace for
// each redirect hop.
//
// # Metrics
//
//	http.client.request.duration  histogram  s            per attempt; method, server.address, server.port,
//	                                                      http.response.status_code, error.type
//	tank.client.attempts          counter    {attempt}    tank.attempt.class, tank.attempt.decision
//	tank.client.retry.sleep       histogram  s            per scheduled wait; tank.attempt.sleep_source
//
// # Cost
//
// With no SDK installed (the otel globals left unset, or the no-op
// providers given), a request whose context holds no span costs the hooks
// a few comparisons and no allocation: Hooks.Enabled says no, and the
// request takes the Transport's success path as if tracing were off
// (bench_test.go: +0 allocs over tank alone). With an SDK, tank's request
// span plus one attempt span cost about what otelhttp's single span costs;
// the comparison is tools/e2e's BenchmarkTracedClient.
//
// # Concurrency
//
// The hooks returned by Hooks are safe for concurrent use by any number of
// requests and front doors. Per-request state lives in the request's
// context; a request's attempts run one after another.
package tracing
