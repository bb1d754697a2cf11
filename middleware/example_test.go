package middleware_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/tankhttp/tank/middleware"
)

// A flaky server answers 503 once, then 200. tank retries the GET and the
// caller sees the 200.
func ExampleNewTransport() {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "hello")
	}))
	defer srv.Close()

	tr := middleware.NewTransport(nil, middleware.WithBackoff(10*time.Millisecond, time.Second))
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	resp, err := client.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, string(body))
	fmt.Println("server hits:", hits.Load())
	// Output:
	// 200 OK hello
	// server hits: 2
}

// A POST without an Idempotency-Key is not retried on a 500: the server may
// have done the work. A classifier can say otherwise for an API known to be
// safe; here it retries 500s for every method, and hooks show each attempt.
func ExampleWithClassifier() {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) < 3 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()

	retry500 := func(a *middleware.Attempt) middleware.Verdict {
		if a.Response != nil && a.Response.StatusCode == http.StatusInternalServerError {
			return middleware.Retry
		}
		return middleware.Pass
	}
	show := middleware.Hooks{AttemptEnd: func(_ context.Context, a *middleware.Attempt) {
		fmt.Printf("attempt %d: %s -> %s (%s)\n", a.Number, a.Class, a.Verdict, string(a.Reason))
	}}
	tr := middleware.NewTransport(nil,
		middleware.WithBackoff(0, 0),
		middleware.WithClassifier(retry500),
		middleware.WithHooks(show))
	defer tr.CloseIdleConnections()

	resp, err := (&http.Client{Transport: tr}).Post(srv.URL, "text/plain", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.Status)
	// Output:
	// attempt 1: server_error -> retry (classifier)
	// attempt 2: server_error -> retry (classifier)
	// attempt 3: final -> stop (final)
	// 201 Created
}
