// Package docs_test keeps the Go snippets of docs/migrating.md compiled and
// run: each snippet appears below verbatim (TestSnippetsAreKept checks it),
// inside a test that sends its requests to a loopback server.
package docs_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-resty/resty/v2"

	"github.com/tankhttp/tank/adapters/backoffretry"
	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/middleware"
)

// server answers the n-th request with codes[n-1] (the last code repeats).
// A 503 carries "Retry-After: 0", which replaces tank's wait, whatever its
// schedule, so the snippets' real waits never run here.
type server struct {
	*httptest.Server
	codes []int

	mu      sync.Mutex
	methods []string
	headers []http.Header
}

func newServer(t *testing.T, codes ...int) *server {
	s := &server{codes: codes}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.methods = append(s.methods, r.Method)
		s.headers = append(s.headers, r.Header.Clone())
		n := len(s.methods)
		s.mu.Unlock()
		code := s.codes[min(n, len(s.codes))-1]
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "0")
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) hits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.methods)
}

func (s *server) header(i int, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headers[i].Get(name)
}

// get sends a GET to url with client and returns the Outcome tank filled.
func get(t *testing.T, client *http.Client, url string) (*http.Response, middleware.Outcome) {
	t.Helper()
	var out middleware.Outcome
	req, err := http.NewRequestWithContext(middleware.WithOutcome(context.Background(), &out), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, out
}

func closeIdle(t *testing.T, client *http.Client) {
	t.Cleanup(client.CloseIdleConnections)
}

// logTo makes the default slog logger write text records to the returned
// buffer until the test ends.
func logTo(t *testing.T) *strings.Builder {
	var buf strings.Builder
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })
	return &buf
}

// What changes whichever library you leave.

func TestExhaustedError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close() // no answer: the request may have been processed
		}
	}))
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: middleware.NewTransport(nil, middleware.WithBackoff(0, 0))}
	closeIdle(t, client)
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{"item":"tank"}`))
	buf := logTo(t)

	resp, err := client.Do(req)
	var ex *middleware.ExhaustedError
	if errors.As(err, &ex) {
		slog.Warn("request failed", "attempts", ex.Attempts, "reason", ex.Reason, "error", ex.Err)
	}

	if resp != nil || ex == nil || ex.Attempts != 1 || ex.Reason != middleware.ReasonNotReplayable {
		t.Errorf("got %v, %v; want an *ExhaustedError after 1 attempt (%s)", resp, err, middleware.ReasonNotReplayable)
	}
	if !strings.Contains(buf.String(), "attempts=1 reason=not_replayable") {
		t.Errorf("log: %q", buf.String())
	}
}

func TestIdempotencyKeys(t *testing.T) {
	srv := newServer(t, 500, 201)
	client := &http.Client{Transport: middleware.NewTransport(nil,
		middleware.WithIdempotencyKeys(true), // POST and PATCH get an Idempotency-Key when they have none
		middleware.WithBackoff(0, 0),
	)}
	closeIdle(t, client)
	resp, err := client.Post(srv.URL, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if k := srv.header(0, "Idempotency-Key"); resp.StatusCode != 201 || srv.hits() != 2 || k == "" || srv.header(1, "Idempotency-Key") != k {
		t.Errorf("status %d after %d hits, keys %q %q; want 201 after 2, one key", resp.StatusCode, srv.hits(), k, srv.header(1, "Idempotency-Key"))
	}
}

// go-retryablehttp.

func TestFromRetryablehttp(t *testing.T) {
	srv := newServer(t, 503, 503, 503, 503, 200)
	logTo(t)

	client := &http.Client{Transport: middleware.NewTransport(nil,
		middleware.WithMaxAttempts(5),                       // RetryMax: 4 retries are 5 attempts
		middleware.WithBackoff(time.Second, 30*time.Second), // RetryWaitMin, RetryWaitMax
		middleware.WithJitter(middleware.JitterNone),        // DefaultBackoff does not jitter
		middleware.WithLogger(slog.Default()),               // Logger, RequestLogHook, ResponseLogHook
	)}

	closeIdle(t, client)
	resp, out := get(t, client, srv.URL)
	if resp.StatusCode != 200 || out.Attempts != 5 {
		t.Errorf("status %d after %d attempts; want 200 after 5", resp.StatusCode, out.Attempts)
	}
}

// sign stands for a request signer of the caller's.
func sign(method, path string, at time.Time) string {
	return method + " " + path + " " + at.UTC().Format(time.RFC3339)
}

func TestPrepareRetry(t *testing.T) {
	srv := newServer(t, 503, 200)

	resign := middleware.WithHooks(middleware.Hooks{
		AttemptStart: func(ctx context.Context, a *middleware.Attempt) context.Context {
			a.Header.Set("X-Signature", sign(a.Request.Method, a.Request.URL.Path, time.Now()))
			return ctx
		},
	})

	client := &http.Client{Transport: middleware.NewTransport(nil, resign)}
	closeIdle(t, client)
	get(t, client, srv.URL+"/items")
	if srv.hits() != 2 || !strings.HasPrefix(srv.header(0, "X-Signature"), "GET /items ") || !strings.HasPrefix(srv.header(1, "X-Signature"), "GET /items ") {
		t.Errorf("%d hits, signatures %q %q; want 2, both signed", srv.hits(), srv.header(0, "X-Signature"), srv.header(1, "X-Signature"))
	}
}

// fetch shows what replaces an ErrorHandler.
func fetch(client *http.Client, req *http.Request) error {
	var out middleware.Outcome
	resp, err := client.Do(req.WithContext(middleware.WithOutcome(req.Context(), &out)))
	if err != nil {
		return err // a transport error: a *middleware.ExhaustedError inside
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("%s after %d attempts (%s)", resp.Status, out.Attempts, out.Reason)
	}
	return nil
}

func TestErrorHandler(t *testing.T) {
	srv := newServer(t, 503)
	client := &http.Client{Transport: middleware.NewTransport(nil)}
	closeIdle(t, client)
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	err := fetch(client, req)
	if want := "503 Service Unavailable after 3 attempts (attempts_exhausted)"; err == nil || err.Error() != want {
		t.Errorf("fetch: %v; want %q", err, want)
	}
}

// resty v2.

func TestRestyBefore(t *testing.T) {
	client := resty.New().
		SetRetryCount(3).
		SetRetryWaitTime(100 * time.Millisecond).
		SetRetryMaxWaitTime(2 * time.Second).
		AddRetryCondition(func(r *resty.Response, err error) bool {
			return err != nil || r.StatusCode() >= 500
		})

	// Compiled only: resty's own loop would wait for real.
	if client.RetryCount != 3 {
		t.Errorf("RetryCount %d", client.RetryCount)
	}
}

func TestFromResty(t *testing.T) {
	srv := newServer(t, 503, 503, 503, 200)

	client := restyretry.Apply(resty.New(),
		middleware.WithMaxAttempts(4),                               // SetRetryCount(3): 3 retries are 4 attempts
		middleware.WithBackoff(100*time.Millisecond, 2*time.Second), // SetRetryWaitTime, SetRetryMaxWaitTime
	)

	t.Cleanup(client.GetClient().CloseIdleConnections)
	resp, err := client.R().Get(srv.URL)
	if err != nil || resp.StatusCode() != 200 || resp.Request.Attempt != 4 {
		t.Errorf("got %v, %v after %d attempts; want 200 after 4", resp, err, resp.Request.Attempt)
	}

	// Per request: the health check below makes one attempt.
	url := srv.URL
	ctx := context.Background()
	srv.codes = []int{503}

	ctx = middleware.WithRequestOptions(ctx, middleware.WithMaxAttempts(1)) // in place of Request.AddRetryCondition
	var out middleware.Outcome
	resp, err = client.R().SetContext(middleware.WithOutcome(ctx, &out)).Get(url)
	// resp.Request.Attempt and out.Attempts: tank's attempts

	if err != nil || resp.StatusCode() != 503 || resp.Request.Attempt != 1 || out.Attempts != 1 {
		t.Errorf("health check: %v, %v, Attempt %d, %+v; want one attempt", resp, err, resp.Request.Attempt, out)
	}
}

func TestRetryHook(t *testing.T) {
	srv := newServer(t, 503, 200)
	buf := logTo(t)

	onRetry := middleware.WithHooks(middleware.Hooks{
		AttemptEnd: func(ctx context.Context, a *middleware.Attempt) {
			if a.Verdict == middleware.Retry {
				slog.InfoContext(ctx, "retrying", "attempt", a.Number, "class", a.Class, "sleep", a.Sleep)
			}
		},
	})

	client := restyretry.Apply(resty.New(), onRetry)
	t.Cleanup(client.GetClient().CloseIdleConnections)
	if _, err := client.R().Get(srv.URL); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "msg=retrying attempt=1 class=unavailable sleep=0s") {
		t.Errorf("log: %q; want one retry record", buf.String())
	}
}

// failsafe-go.

func TestFromFailsafe(t *testing.T) {
	srv := newServer(t, 503, 503, 200)
	if err := sendLikeFailsafe(context.Background(), srv.URL); err != nil {
		t.Fatal(err)
	}
	if srv.hits() != 3 {
		t.Errorf("%d hits; want 200 after 3", srv.hits())
	}
}

// sendLikeFailsafe sends a GET to url with the Transport that replaces a
// failsafe-go retry policy.
func sendLikeFailsafe(ctx context.Context, url string) error {
	budget, err := middleware.NewBudget(0.2, 3, nil) // 20% of requests, plus 3 retries a second, per host
	if err != nil {
		return err
	}
	client := &http.Client{Transport: middleware.NewTransport(nil,
		middleware.WithMaxAttempts(3),                               // WithMaxRetries(2), WithMaxAttempts(3)
		middleware.WithBackoff(100*time.Millisecond, 5*time.Second), // WithBackoff(delay, maxDelay)
		middleware.WithBudget(budget),                               // WithBudget
	)}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // WithMaxDuration
	defer cancel()

	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("got %s; want 200", resp.Status)
	}
	return nil
}

func TestBackoffFactor(t *testing.T) {
	factor := middleware.WithSchedule(func() func(n int) (time.Duration, bool) {
		return func(n int) (time.Duration, bool) { // the wait after the n-th failed attempt
			d := 0.1 * math.Pow(1.5, float64(n-1)) // seconds: WithBackoffFactor(100ms, 5s, 1.5)
			return min(time.Duration(d*float64(time.Second)), 5*time.Second), true
		}
	})

	// In a synctest bubble, against a transport that always answers 500:
	// the waits are the schedule's, and the fake clock sleeps them.
	synctest.Test(t, func(t *testing.T) {
		var waits []time.Duration
		record := middleware.WithHooks(middleware.Hooks{AttemptEnd: func(_ context.Context, a *middleware.Attempt) {
			if a.Verdict == middleware.Retry {
				waits = append(waits, a.Sleep)
			}
		}})
		always500 := roundTripFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 500, Body: http.NoBody}, nil
		})
		tr := middleware.NewTransport(always500, factor, record, middleware.WithMaxAttempts(4))
		req, _ := http.NewRequest(http.MethodGet, "http://api.example.com/", nil)
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		want := []time.Duration{100 * time.Millisecond, 150 * time.Millisecond, 225 * time.Millisecond}
		if fmt.Sprint(waits) != fmt.Sprint(want) {
			t.Errorf("waits %v; want %v", waits, want)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestClassifier(t *testing.T) {
	classify := middleware.WithClassifier(func(a *middleware.Attempt) middleware.Verdict {
		switch {
		case a.Response != nil && a.Response.StatusCode == http.StatusConflict:
			return middleware.Retry // HandleResult, HandleIf: retry this answer too
		case a.Response != nil && a.Response.Header.Get("X-No-Retry") != "":
			return middleware.Stop // AbortOnResult, AbortIf: the server says no
		}
		return middleware.Pass // the default rules decide
	})

	srv := newServer(t, 409, 200)
	client := &http.Client{Transport: middleware.NewTransport(nil, classify, middleware.WithBackoff(0, 0))}
	closeIdle(t, client)
	if resp, out := get(t, client, srv.URL); resp.StatusCode != 200 || out.Attempts != 2 {
		t.Errorf("409 then 200: %d after %d attempts; want 200 after 2", resp.StatusCode, out.Attempts)
	}
}

func TestListeners(t *testing.T) {
	buf := logTo(t)

	listeners := middleware.WithHooks(middleware.Hooks{
		RequestEnd: func(ctx context.Context, last *middleware.Attempt) {
			switch last.Reason {
			case middleware.ReasonFinal: // OnSuccess, or OnFailure on a final status
			case middleware.ReasonAttempts: // OnRetriesExceeded
				slog.WarnContext(ctx, "retries exceeded", "attempts", last.Number)
			default: // OnAbort, and every other way to give up
				slog.WarnContext(ctx, "gave up", "reason", last.Reason)
			}
		},
	})

	srv := newServer(t, 503)
	client := &http.Client{Transport: middleware.NewTransport(nil, listeners)}
	closeIdle(t, client)
	get(t, client, srv.URL)
	if !strings.Contains(buf.String(), `msg="retries exceeded" attempts=3`) {
		t.Errorf("log: %q; want retries exceeded after 3 attempts", buf.String())
	}
}

// cenkalti/backoff v4.

func TestBackoffBefore(t *testing.T) {
	srv := newServer(t, 200)
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)

	b := backoff.WithMaxRetries(backoff.NewExponentialBackOff(), 3)
	resp, err := backoff.RetryWithData(func() (*http.Response, error) {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 500 {
			resp.Body.Close()
			return nil, fmt.Errorf("server error: %s", resp.Status)
		}
		return resp, nil
	}, backoff.WithContext(b, req.Context()))

	// Run against a server that answers at once: backoff would wait for real.
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("got %v, %v", resp, err)
	}
	resp.Body.Close()
}

func TestFromBackoffKeepTheLoop(t *testing.T) {
	srv := newServer(t, 503, 503, 503, 200)
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{"item":"tank"}`))
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	next := tr

	op, b := backoffretry.New(req, next, middleware.WithMaxAttempts(4))
	resp, err := backoff.RetryWithData(op, backoff.WithContext(b, req.Context()))

	if err != nil || resp.StatusCode != 200 || srv.hits() != 4 {
		t.Fatalf("got %v, %v after %d hits; want 200 after 4", resp, err, srv.hits())
	}
	resp.Body.Close()
}

func TestFromBackoffSchedule(t *testing.T) {
	srv := newServer(t, 503, 503, 200)

	client := &http.Client{Transport: middleware.NewTransport(nil,
		middleware.WithMaxAttempts(6), // tank's cap: raise it when the BackOff should decide
		backoffretry.Schedule(func() backoff.BackOff {
			return backoff.NewExponentialBackOff(
				backoff.WithInitialInterval(200*time.Millisecond),
				backoff.WithMaxInterval(10*time.Second),
			)
		}),
	)}

	closeIdle(t, client)
	if resp, out := get(t, client, srv.URL); resp.StatusCode != 200 || out.Attempts != 3 {
		t.Errorf("%d after %d attempts; want 200 after 3", resp.StatusCode, out.Attempts)
	}
}

// urllib3.

// urllib3Backoff waits as urllib3's Retry does: nothing before the first
// retry, then factor·2^(n-1) seconds after the n-th failed attempt, at
// most max.
func urllib3Backoff(factor float64, max time.Duration) func() func(n int) (time.Duration, bool) {
	return func() func(n int) (time.Duration, bool) {
		return func(n int) (time.Duration, bool) {
			if n == 1 {
				return 0, true
			}
			s := factor * math.Pow(2, float64(n-1))
			if s >= max.Seconds() {
				return max, true
			}
			return time.Duration(s * float64(time.Second)), true
		}
	}
}

func TestFromUrllib3(t *testing.T) {
	srv := newServer(t, 503)

	client := &http.Client{Transport: middleware.NewTransport(nil,
		middleware.WithMaxAttempts(6),                                 // total=5
		middleware.WithGroupAttempts(4, 3, 4),                         // connect=3, read=2, status=3
		middleware.WithStatuses(nil, []int{500, 502, 503, 504}),       // status_forcelist, allowed_methods only
		middleware.WithSchedule(urllib3Backoff(0.5, 120*time.Second)), // backoff_factor=0.5, backoff_max=120
	)}

	closeIdle(t, client)
	if resp, out := get(t, client, srv.URL); resp.StatusCode != 503 || out.Attempts != 4 || out.Reason != middleware.ReasonAttempts {
		t.Errorf("GET: %d, %+v; want the last 503 after 4 attempts (status=3)", resp.StatusCode, out)
	}
	before := srv.hits()
	resp, err := client.Post(srv.URL, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := srv.hits() - before; n != 1 {
		t.Errorf("POST: %d attempts; want 1 (503 retried for allowed methods only)", n)
	}
	sched := urllib3Backoff(0.1, 120*time.Second)()
	for n, want := range map[int]time.Duration{1: 0, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 40: 120 * time.Second} {
		if got, ok := sched(n); !ok || got != want {
			t.Errorf("backoff_factor=0.1: wait after attempt %d %v; want %v", n, got, want)
		}
	}
}

// TestSnippetsAreKept checks that every Go snippet of migrating.md, but those
// marked as not compiled (the peer libraries tank does not depend on),
// appears in this file, line for line (indentation aside).
func TestSnippetsAreKept(t *testing.T) {
	doc, err := os.ReadFile("migrating.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("migrating_test.go")
	if err != nil {
		t.Fatal(err)
	}
	code := normalize(string(src))
	n := 0
	for _, s := range snippets(string(doc)) {
		n++
		if !strings.Contains(code, normalize(s)) {
			t.Errorf("a snippet of migrating.md is not kept in migrating_test.go:\n%s", s)
		}
	}
	if n < 10 {
		t.Errorf("found %d Go snippets in migrating.md; want the doc's", n)
	}
}

// snippets returns the ```go blocks of doc, skipping a block whose fence
// line is preceded by a "<!-- not compiled" comment.
func snippets(doc string) []string {
	var (
		out   []string
		cur   []string
		in    bool
		skip  bool
		prev  string
		lines = bufio.NewScanner(strings.NewReader(doc))
	)
	for lines.Scan() {
		l := lines.Text()
		switch {
		case !in && strings.TrimSpace(l) == "```go":
			in, skip, cur = true, strings.HasPrefix(strings.TrimSpace(prev), "<!-- not compiled"), nil
		case in && strings.TrimSpace(l) == "```":
			in = false
			if !skip {
				out = append(out, strings.Join(cur, "\n"))
			}
		case in:
			cur = append(cur, l)
		}
		prev = l
	}
	return out
}

// normalize drops each line's indentation and the blank lines.
func normalize(s string) string {
	var b strings.Builder
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
