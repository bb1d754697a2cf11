package backoffretry_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/tankhttp/tank/adapters/backoffretry"
	"github.com/tankhttp/tank/middleware"
)

// flakyServer answers 503 twice, then 200.
func flakyServer() *httptest.Server {
	var n atomic.Int32
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "hello")
	}))
}

func ExampleNew() {
	srv := flakyServer()
	defer srv.Close()

	req, _ := http.NewRequest("GET", srv.URL, nil)
	op, b := backoffretry.New(req, nil, middleware.WithBackoff(time.Millisecond, 10*time.Millisecond))
	resp, err := backoff.RetryNotifyWithData(op, backoff.WithContext(b, req.Context()),
		func(err error, _ time.Duration) { fmt.Println(err) })
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output:
	// backoffretry: attempt 1 will be retried (unavailable, not_processed): 503 Service Unavailable
	// backoffretry: attempt 2 will be retried (unavailable, not_processed): 503 Service Unavailable
	// 200 hello
}

func ExampleSchedule() {
	srv := flakyServer()
	defer srv.Close()

	var waits []time.Duration
	client := &http.Client{Transport: middleware.NewTransport(nil,
		backoffretry.Schedule(func() backoff.BackOff {
			return backoff.NewConstantBackOff(5 * time.Millisecond)
		}),
		middleware.WithHooks(middleware.Hooks{AttemptEnd: func(_ context.Context, a *middleware.Attempt) {
			if a.Verdict == middleware.Retry {
				waits = append(waits, a.Sleep)
			}
		}}),
	)}
	resp, err := client.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body), "after waits of", waits)
	// Output:
	// 200 hello after waits of [5ms 5ms]
}
