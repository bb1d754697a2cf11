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
//   - c.GetClient().Transport becomes a *middleware.Transport wrapping the
//     previous transport (http.DefaultTransport when it was nil).
//   - c.SetRetryCount(0), and c.AddRetryCondition with a condition that
//     always returns false.
//
// Nothing else changes: timeouts, hooks, middlewares, redirects, cookies and
// the request and response handling are resty's. Some of them now see one
// logical request where tank may make several attempts:
//
//   - resty's request middlewares (OnBeforeRequest) and response hooks run
//     once per request, not once per attempt;
//   - Request.Attempt stays 1 and resty's retry hooks (AddRetryHook) never
//     run; observe attempts with middleware.WithHooks instead;
//   - SetTimeout bounds the whole request, retries and waits included: it
//     becomes the deadline of the request's context, and tank never
//     schedules a wait that would end after it.
//
// # Calling resty setters after Apply
//
//   - SetRetryCount(n): no second retry layer. With a retry condition
//     present, resty v2 retries only when a condition returns true, and the
//     condition Apply added never does. resty then only runs its loop
//     bookkeeping around tank's single call.
//   - AddRetryCondition with a condition that can return true (or
//     Request.AddRetryCondition), together with SetRetryCount: resty would
//     retry on top of tank, multiplying the attempts and re-sending what tank
//     refused to re-send. Don't.
//   - SetTransport(rt): replaces tank's transport, so the client no longer
//     retries at all (resty's loop stays off). Call Apply again afterwards.
//   - SetTLSClientConfig, SetProxy, RemoveProxy, SetCertificates,
//     SetRootCertificate and the other setters that edit resty's
//     *http.Transport: resty v2 finds them by a type assertion on the
//     client's transport, which is now a *middleware.Transport; they log
//     "current transport is not an *http.Transport instance" and change
//     nothing. Configure TLS and proxies before Apply, or keep the
//     *http.Transport (c.Transport() before Apply) and edit it directly: tank
//     wraps that same value.
//   - Apply a second time: a second middleware.Transport wraps the first and
//     attempts multiply. Apply once per client.
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
