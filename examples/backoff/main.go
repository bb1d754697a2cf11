// Command backoff shows tank and cenkalti/backoff v4 working together, in
// both directions, against an embedded flaky server.
//
//	go run ./examples/backoff
//
// It runs offline: the server listens on 127.0.0.1.
//
//  1. tank judges, backoff loops: backoffretry.New gives backoff.RetryNotify
//     an operation and a BackOff that follow tank's decisions.
//  2. backoff schedules, tank judges: backoffretry.Schedule makes an
//     ExponentialBackOff the wait schedule of a tank Transport.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/tankhttp/tank/adapters/backoffretry"
	"github.com/tankhttp/tank/examples/flaky"
	"github.com/tankhttp/tank/middleware"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "backoff example:", err)
		os.Exit(1)
	}
}

// answer is the embedded server's misbehaviour; n counts the requests the
// path processed, this one included.
func answer(w http.ResponseWriter, r *http.Request, n int) {
	switch r.URL.Path {
	case "/orders": // processes the order, then the connection dies
		flaky.Reset(w)
	case "/throttled": // 429 asking for 1s, then 200
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	default: // 503 twice, then 200
		if n <= 2 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}
}

func run(out io.Writer) error {
	f := flaky.New(answer)
	srv := httptest.NewServer(f)
	defer srv.Close()
	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()

	var failed []string
	check := func(ok bool, what string) {
		if !ok {
			failed = append(failed, what)
		}
	}

	fmt.Fprintln(out, "1. tank judges, backoff.RetryNotify loops")
	notify := func(err error, d time.Duration) {
		fmt.Fprintf(out, "   retry in %v: %v\n", d, err)
	}
	send := func(method, path, body string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(context.Background(), method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		op, b := backoffretry.New(req, base,
			middleware.WithBackoff(20*time.Millisecond, time.Second), middleware.WithJitter(middleware.JitterNone))
		var resp *http.Response
		err = backoff.RetryNotify(func() (err error) { resp, err = op(); return err },
			backoff.WithContext(b, req.Context()), notify)
		return resp, err
	}

	fmt.Fprintln(out, "   PUT /flaky (503, 503, 200):")
	resp, err := send("PUT", "/flaky", "v2")
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Fprintf(out, "   => %s after %d attempts\n", resp.Status, f.Count("/flaky"))
	check(resp.StatusCode == 200 && f.Count("/flaky") == 3, "PUT /flaky")

	fmt.Fprintln(out, "   POST /orders (processed, then the connection is reset):")
	_, err = send("POST", "/orders", `{"item":"tank"}`)
	var ex *middleware.ExhaustedError
	if errors.As(err, &ex) {
		fmt.Fprintf(out, "   => gave up after %d attempt(s), reason %s; orders placed: %d\n",
			ex.Attempts, string(ex.Reason), f.Count("/orders"))
	}
	check(errors.Is(err, middleware.ReasonNotReplayable) && f.Count("/orders") == 1, "POST /orders")

	fmt.Fprintln(out, "2. backoff schedules (ExponentialBackOff), tank judges")
	var waits []string
	client := &http.Client{Transport: middleware.NewTransport(base,
		backoffretry.Schedule(func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval = 20 * time.Millisecond
			b.RandomizationFactor = 0 // stable output
			return b
		}),
		middleware.WithMaxAttempts(4),
		middleware.WithHooks(middleware.Hooks{AttemptEnd: func(_ context.Context, a *middleware.Attempt) {
			if a.Verdict == middleware.Retry {
				waits = append(waits, fmt.Sprintf("%v (%s)", a.Sleep, a.SleepSource))
			}
		}}),
	)}
	for _, path := range []string{"/again", "/throttled"} {
		waits = nil
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			return err
		}
		resp.Body.Close()
		fmt.Fprintf(out, "   GET %-10s => %s after %d attempts, waits %v\n", path, resp.Status, f.Count(path), waits)
		check(resp.StatusCode == 200, "GET "+path)
	}

	if failed != nil {
		return errors.New("unexpected outcome: " + strings.Join(failed, "; "))
	}
	return nil
}
