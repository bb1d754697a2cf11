package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
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

// statusServer answers the n-th request with codes[n-1] (the last code
// repeats) and counts the requests.
func statusServer(hits *atomic.Int32, codes ...int) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(hits.Add(1))
		w.WriteHeader(codes[min(n, len(codes))-1])
	}))
}

// A budget caps retries at a share of the traffic to a host. This one allows
// 20% of requests, and no retries earned with time, so its bucket holds
// two tokens: the first request, on a host that answers 503, retries twice
// and drains it; the next one makes a single attempt.
func ExampleNewBudget() {
	var hits atomic.Int32
	srv := statusServer(&hits, http.StatusServiceUnavailable)
	defer srv.Close()

	budget, err := middleware.NewBudget(0.2, 0, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	tr := middleware.NewTransport(nil, middleware.WithBudget(budget), middleware.WithBackoff(0, 0))
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	for i := 1; i <= 2; i++ {
		var out middleware.Outcome
		req, _ := http.NewRequestWithContext(middleware.WithOutcome(context.Background(), &out), "GET", srv.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Printf("request %d: %s, attempts=%d reason=%s\n", i, resp.Status, out.Attempts, out.Reason)
	}
	// Output:
	// request 1: 503 Service Unavailable, attempts=3 reason=attempts_exhausted
	// request 2: 503 Service Unavailable, attempts=1 reason=budget_exhausted
}

// A POST that the server answers with a 500 may have been processed, so tank
// does not send it again, unless it carries an Idempotency-Key. With
// WithIdempotencyKeys, tank adds one to each POST that has none; every
// attempt carries the same key, so the server can recognise a repeat.
func ExampleWithIdempotencyKeys() {
	var (
		mu   sync.Mutex
		keys []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		if len(keys) == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()

	tr := middleware.NewTransport(nil, middleware.WithIdempotencyKeys(true), middleware.WithBackoff(0, 0))
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post(srv.URL, "application/json", strings.NewReader(`{"item":"tank"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()

	mu.Lock()
	defer mu.Unlock()
	fmt.Println(resp.Status, "attempts:", len(keys))
	fmt.Println("key sent:", keys[0] != "", "same key on the retry:", keys[1] == keys[0])
	// Output:
	// 201 Created attempts: 2
	// key sent: true same key on the retry: true
}

// WithLogger logs each retry and how a retried request ended, with stable
// keys. The handler here drops the time so the output is stable; the
// transport dials the local test server whatever the host, so the logged URL
// is stable too (its query is never logged).
func ExampleWithLogger() {
	var hits atomic.Int32
	srv := statusServer(&hits, http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusOK)
	defer srv.Close()
	toServer := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}}
	defer toServer.CloseIdleConnections()

	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
	tr := middleware.NewTransport(toServer, middleware.WithLogger(logger), middleware.WithBackoff(0, 0))
	resp, err := (&http.Client{Transport: tr}).Get("http://api.example.com/items?page=2")
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	// Output:
	// level=INFO msg="tank: retrying" attempt=1 class=unavailable reason=not_processed sleep=0s status=503 method=GET url=http://api.example.com/items
	// level=INFO msg="tank: retrying" attempt=2 class=unavailable reason=not_processed sleep=0s status=503 method=GET url=http://api.example.com/items
	// level=INFO msg="tank: succeeded after retries" attempt=3 class=final reason=final status=200 method=GET url=http://api.example.com/items
}

// Per-request options override the Transport's for the requests made with
// a context: no retries for a health check, more for a batch import.
func ExampleWithRequestOptions() {
	var hits atomic.Int32
	srv := statusServer(&hits, http.StatusServiceUnavailable)
	defer srv.Close()

	tr := middleware.NewTransport(nil, middleware.WithMaxAttempts(3), middleware.WithBackoff(0, 0))
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	send := func(name string, ctx context.Context) {
		hits.Store(0)
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Printf("%s: %s, attempts=%d\n", name, resp.Status, hits.Load())
	}
	ctx := context.Background()
	send("default", ctx)
	send("health check", middleware.WithRequestOptions(ctx, middleware.WithMaxAttempts(1)))
	send("import", middleware.WithRequestOptions(ctx, middleware.WithMaxAttempts(5)))
	// Output:
	// default: 503 Service Unavailable, attempts=3
	// health check: 503 Service Unavailable, attempts=1
	// import: 503 Service Unavailable, attempts=5
}

// An Outcome tells how a request ended, successes included, without hooks:
// here a success after two 503s, then one at the first attempt.
func ExampleWithOutcome() {
	var hits atomic.Int32
	srv := statusServer(&hits, http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusOK)
	defer srv.Close()

	tr := middleware.NewTransport(nil, middleware.WithBackoff(0, 0))
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	for range 2 {
		var out middleware.Outcome
		req, _ := http.NewRequestWithContext(middleware.WithOutcome(context.Background(), &out), "GET", srv.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Printf("%s: attempts=%d reason=%s slept=%v\n", resp.Status, out.Attempts, out.Reason, out.Slept)
	}
	// Output:
	// 200 OK: attempts=3 reason=final slept=0s
	// 200 OK: attempts=1 reason=final slept=0s
}

// When retries end on a transport error, the error is an *ExhaustedError
// that says how many attempts were made and why tank stopped. This server
// closes every connection without answering: tank retries the GET until its
// cap, but sends the POST once, since the server may have processed it.
func ExampleExhaustedError() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer srv.Close()

	tr := middleware.NewTransport(nil, middleware.WithBackoff(0, 0))
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	get, _ := http.NewRequest("GET", srv.URL+"/orders/42", nil)
	post, _ := http.NewRequest("POST", srv.URL+"/orders", strings.NewReader(`{"item":"tank"}`))
	for _, req := range []*http.Request{get, post} {
		_, err := client.Do(req)
		var ex *middleware.ExhaustedError
		if errors.As(err, &ex) {
			fmt.Printf("%s: attempts=%d reason=%s\n", req.Method, ex.Attempts, ex.Reason)
		}
		if errors.Is(err, middleware.ReasonNotReplayable) {
			fmt.Println("the POST may have been processed: not sent again")
		}
	}
	// Output:
	// GET: attempts=3 reason=attempts_exhausted
	// POST: attempts=1 reason=not_replayable
	// the POST may have been processed: not sent again
}

// A server that stalls on a request's first copy (the one without an
// X-Attempt header). The GET gets a second copy after 50ms and the hedge's
// answer; the stalled copy is cancelled. A POST without an Idempotency-Key
// would not be hedged.
func ExampleWithHedging() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Attempt") == "" {
			<-r.Context().Done() // stalled until tank gives it up
			return
		}
		io.WriteString(w, "from the hedge")
	}))
	defer srv.Close()

	tr := middleware.NewTransport(nil,
		middleware.WithHedging(50*time.Millisecond, 1),
		middleware.WithAttemptHeader("X-Attempt"), // copies after the first say which they are
	)
	defer tr.CloseIdleConnections()
	var out middleware.Outcome
	req, _ := http.NewRequestWithContext(middleware.WithOutcome(context.Background(), &out), http.MethodGet, srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s after %d copies\n", resp.StatusCode, b, out.Attempts)
	// Output: 200 from the hedge after 2 copies
}
