// Package restyretry gives a resty v2 client (github.com/go-resty/resty/v2)
// tank's retry judgement with one call.
//
// Usage:
//
//	client := restyretry.Apply(resty.New(),
//		middleware.WithMaxAttempts(4),
//		middleware.WithBackoff(100*time.Millisecond, 2*time.Second),
//	)
//	resp, err := client.R().SetBody(order).Post("https://api.example.com/orders")
//
// # Where the retries happen
//
// Apply retries at the transport level: it installs a middleware.Transport
// under the client, around the transport the client already had, and turns
// resty's own retry loop off. A resty request therefore runs resty's
// middleware chain once, and tank repeats only the round trip. This gives the
// same decisions as middleware.Transport by construction, and it avoids what
// resty v2's own retry loop does:
//
//   - it reruns resty's whole request middleware chain for every attempt
//     (about 17-20 allocations before any retry logic);
//   - it retries any method, so a POST the server processed before the
//     connection broke is sent again (resty#777);
//   - it ignores Retry-After unless given a RetryAfter function, clamps that
//     function's answer into [RetryWaitTime, RetryMaxWaitTime], and starts
//     waits that outlast the caller's deadline, returning a bare context
//     error;
//   - it sends an empty body on retry when the body is an io.Reader that
//     cannot seek;
//   - it retries an untrusted certificate.
//
// # What Apply changes on the client
//
//   - c.GetClient().Transport becomes a RoundTripper of this package around
//     a *middleware.Transport, which wraps the previous transport
//     (http.DefaultTransport when it was nil).
//   - c.SetRetryCount(0).
//   - Once per client: c.AddRetryCondition with a condition that always
//     returns false, one request middleware (OnBeforeRequest) and one
//     OnSuccess and one OnError hook. The middleware gives each request a
//     context of this package around its own, which carries its attempt
//     count (see Per-request options and outcomes), and the hooks put the
//     request's own context back before Execute returns. In between,
//     request middlewares registered after Apply, response middlewares and
//     hooks registered before Apply see the wrapping context, which has the
//     same values, deadline and cancellation.
//     Stopping resty's own retry loop, when it is on, is their other job
//     (see Calling resty setters after Apply).
//
// Nothing else changes: timeouts, hooks, middlewares, redirects, cookies and
// the request and response handling are resty's. Some of them now see one
// logical request where tank may make several attempts:
//
//   - resty's request middlewares (OnBeforeRequest) and response hooks run
//     once per request, not once per attempt;
//   - Request.Attempt reports tank's attempts (so does TraceInfo's
//     RequestAttempt, and resty's log of a failed request), set as soon as
//     tank answers: resty's response middlewares (OnAfterResponse) and its
//     OnSuccess and OnError hooks see it. A request tank did not send (a
//     middleware's error, an invalid per-request option) keeps resty's
//     count. resty's retry hooks (AddRetryHook) never run; observe each
//     attempt with middleware.WithHooks instead;
//   - SetTimeout bounds the whole request, retries and waits included: it
//     becomes the deadline of the request's context, and tank never
//     schedules a wait that would end after it.
//
// # Calling resty setters after Apply
//
//   - SetRetryCount, AddRetryCondition, Request.AddRetryCondition,
//     SetRetryWaitTime, SetRetryMaxWaitTime, SetRetryAfter and AddRetryHook,
//     before or after Apply and in any order: tank stays the only retry
//     layer. resty v2 runs its own retry loop only when RetryCount is above
//     0 when a request executes, and any retry condition that answers true
//     makes it retry, so Apply does not rely on the count or the
//     conditions. When the loop is on, Apply's request middleware marks the
//     request, and once tank has answered, Apply's transport replaces the
//     request's context (Request.Context) with a canceled child of it
//     (context.Cause: ErrRestyLoopStopped). After each pass, resty's loop
//     checks that context before anything else and returns tank's result
//     as it is: no retry condition is asked, no retry hook runs, resty does
//     not wait, and the server sees tank's attempts only. The caller gets
//     tank's last response with its body (also with SetDoNotParseResponse:
//     the body is left for the caller, readable) or tank's error. Apply's
//     OnSuccess and OnError hooks put the request's context back before
//     Execute returns, so the caller and hooks registered after Apply see
//     their own context. OnAfterResponse middlewares, and OnSuccess and
//     OnError hooks registered before Apply, run in between and see the
//     canceled one; the *http.Request and the response body keep theirs.
//     With RetryCount 0, which Apply sets, none of this happens.
//   - Two cases still reach resty's retry conditions with the loop on. A
//     request middleware registered after Apply that replaces the request's
//     context with one not derived from it hides the mark: derive the new
//     context from r.Context() instead. And a request that fails before it
//     is sent (a request middleware's error, resty's rate limiter) goes to
//     the conditions as in plain resty, which may run the middlewares again
//     and wait; nothing reaches the server.
//   - SetTransport(rt): replaces Apply's transport, so tank no longer
//     retries, and resty's loop, if on, retries as in plain resty. Call
//     Apply again afterwards: it wraps rt.
//   - SetDigestAuth: resty keeps the transport it finds at the call and puts
//     a digest transport around it before every request. Call it after
//     Apply; called before, it drops tank's transport at the first request.
//   - SetTLSClientConfig, SetProxy, RemoveProxy, SetCertificates,
//     SetRootCertificate and the other setters that edit resty's
//     *http.Transport: resty v2 finds them by a type assertion on the
//     client's transport, which is now Apply's; they log "current transport
//     is not an *http.Transport instance" and change nothing. Configure TLS
//     and proxies before Apply, or keep the *http.Transport (c.Transport()
//     before Apply) and edit it directly: tank wraps that same value.
//
// # Apply a second time
//
// Apply is idempotent. A second call replaces the first one's options (the
// last call wins) and wraps the transport the first call wrapped, so the
// transport is wrapped once; it registers no condition, middleware or hook
// again. After SetTransport(rt), Apply wraps rt instead. resty's Clone
// shares the *http.Client, so Apply on a client or its clone changes the
// transport of both; a clone made after Apply has Apply's condition,
// middleware and hooks, and Apply on a clone made before registers them on
// the clone.
//
// # Per-request options and outcomes
//
// A request's context reaches tank: set it with R().SetContext(ctx).
// middleware.WithRequestOptions(ctx, ...) puts options over Apply's for the
// requests made with ctx (middleware.WithMaxAttempts(1) for a health
// check), and middleware.WithOutcome(ctx, &out) has tank fill out in when
// the request ends. Request.Attempt is read from that same Outcome: when
// the caller's context carries none, Apply's request middleware adds one of
// its own.
//
// # Request bodies
//
// resty v2 gives every request body a GetBody: []byte, string and marshalled
// structs are in memory already, and an io.Reader that cannot seek is read
// whole into memory by resty before the first attempt (without a bound of
// tank's). tank rewinds through GetBody, so every attempt sends the same
// bytes.
//
// # Errors
//
// When retries end on a transport error, resty returns the *url.Error of
// net/http around tank's *middleware.ExhaustedError; errors.Is and errors.As
// reach the last attempt's error and the middleware.Reason through it.
//
// # Concurrency
//
// Apply configures c in place and must not run concurrently with requests
// on c or with other setters. Afterwards the client is as safe for
// concurrent use as resty makes it; tank's transport is safe for concurrent
// use, and each request's retry state lives in its own round trip.
package restyretry
