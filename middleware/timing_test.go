package middleware

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// fakeRT is an in-memory base RoundTripper for whole-loop timing tests
// under synctest. It reports a connection and written headers through the
// request's client trace, as net/http does, and answers with status (and
// Retry-After when set). With block set it waits for the attempt's context
// instead, like a server that never answers.
type fakeRT struct {
	status     int
	retryAfter string
	block      bool
	calls      int
}

func (f *fakeRT) RoundTrip(req *http.Request) (*http.Response, error) {
	f.calls++
	if req.Body != nil {
		req.Body.Close()
	}
	if tr := httptrace.ContextClientTrace(req.Context()); tr != nil {
		if tr.GotConn != nil {
			tr.GotConn(httptrace.GotConnInfo{})
		}
		if tr.WroteHeaders != nil {
			tr.WroteHeaders()
		}
	}
	if f.block {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	h := http.Header{}
	if f.retryAfter != "" {
		h.Set("Retry-After", f.retryAfter)
	}
	return &http.Response{StatusCode: f.status, Header: h, Body: http.NoBody, Request: req}, nil
}

// TestCancelDuringWaitReturnsCause: canceling while tank waits ends the
// request at once with the context's cause.
func TestCancelDuringWaitReturnsCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &fakeRT{status: 503}
		tr := NewTransport(rt, WithBackoff(time.Hour, time.Hour), WithJitter(JitterNone))
		ctx, cancel := context.WithCancelCause(context.Background())
		cause := errors.New("shutting down")
		body := &closeCounter{Reader: strings.NewReader("payload")}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://api.test/", body)
		var replays []*closeCounter
		req.GetBody = func() (io.ReadCloser, error) {
			b := &closeCounter{Reader: strings.NewReader("payload")}
			replays = append(replays, b)
			return b, nil
		}
		start := time.Now()
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, err = tr.RoundTrip(req)
		}()
		synctest.Wait() // the first attempt is made and tank is waiting
		if rt.calls != 1 {
			t.Fatalf("%d attempts before the wait; want 1", rt.calls)
		}
		cancel(cause)
		<-done
		if el := time.Since(start); el != 0 {
			t.Errorf("returned after %v of fake time; want at once", el)
		}
		var ee *ExhaustedError
		if !errors.Is(err, cause) || !errors.As(err, &ee) || ee.Reason != ReasonCanceled || ee.Attempts != 1 {
			t.Fatalf("RoundTrip error %v; want *ExhaustedError (1 attempt, ReasonCanceled) carrying the cause", err)
		}
		if rt.calls != 1 {
			t.Errorf("%d attempts; want 1", rt.calls)
		}
		if body.closes.Load() != 1 || len(replays) != 1 || replays[0].closes.Load() != 1 {
			t.Errorf("request body closed %d times, %d replay bodies; want 1, and 1 closed once (never sent)", body.closes.Load(), len(replays))
		}
	})
}

// TestRetryAfterBeyondDeadlineReturnsAtOnce: a Retry-After that would end
// after the caller's deadline is not waited for: the 503 comes back at once.
func TestRetryAfterBeyondDeadlineReturnsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &fakeRT{status: 503, retryAfter: "10"}
		var reason Reason
		tr := NewTransport(rt, WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) { reason = a.Reason }}))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/", nil)
		start := time.Now()
		resp, err := tr.RoundTrip(req)
		if el := time.Since(start); el != 0 {
			t.Errorf("returned after %v of fake time; want 0", el)
		}
		if err != nil || resp.StatusCode != 503 {
			t.Fatalf("RoundTrip = %v, %v; want the 503", resp, err)
		}
		if rt.calls != 1 || reason != ReasonDeadline {
			t.Errorf("%d attempts, reason %s; want 1 and %s", rt.calls, reason, ReasonDeadline)
		}
	})
}

// TestRetryAfterAboveCapReturnsAtOnce: a Retry-After longer than the cap is
// not honoured; the response comes back with ReasonRetryAfter.
func TestRetryAfterAboveCapReturnsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &fakeRT{status: 429, retryAfter: "120"}
		var reason Reason
		tr := NewTransport(rt, WithRetryAfterCap(time.Minute),
			WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) { reason = a.Reason }}))
		req, _ := http.NewRequest(http.MethodPost, "http://api.test/", nil)
		start := time.Now()
		resp, err := tr.RoundTrip(req)
		if el := time.Since(start); el != 0 {
			t.Errorf("returned after %v of fake time; want 0", el)
		}
		if err != nil || resp.StatusCode != 429 || rt.calls != 1 || reason != ReasonRetryAfter {
			t.Fatalf("RoundTrip = %v, %v after %d attempts, reason %s; want the 429 after 1, %s", resp, err, rt.calls, reason, ReasonRetryAfter)
		}
	})
}

// TestRetryAfterHonoured: a Retry-After within the cap replaces the backoff.
func TestRetryAfterHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &fakeRT{status: 503, retryAfter: "7"}
		var sleeps []time.Duration
		var srcs []SleepSource
		tr := NewTransport(rt, WithBackoff(time.Millisecond, time.Millisecond), WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) {
			sleeps, srcs = append(sleeps, a.Sleep), append(srcs, a.SleepSource)
		}}))
		req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
		start := time.Now()
		resp, err := tr.RoundTrip(req)
		if err != nil || resp.StatusCode != 503 || rt.calls != 3 {
			t.Fatalf("RoundTrip = %v, %v after %d attempts; want the 503 after 3", resp, err, rt.calls)
		}
		if el := time.Since(start); el != 14*time.Second {
			t.Errorf("took %v of fake time; want 14s (two waits of Retry-After: 7)", el)
		}
		if sleeps[0] != 7*time.Second || srcs[0] != SleepRetryAfter {
			t.Errorf("first wait %v from %q; want 7s from %q", sleeps[0], srcs[0], SleepRetryAfter)
		}
	})
}

// TestMalformedRetryAfterFallsBackToBackoff: an unparsable Retry-After is
// reported on the attempt, and the backoff decides the wait.
func TestMalformedRetryAfterFallsBackToBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &fakeRT{status: 503, retryAfter: "soon, please"}
		var a1 Attempt
		tr := NewTransport(rt, WithMaxAttempts(2), WithBackoff(3*time.Second, 3*time.Second), WithJitter(JitterNone),
			WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) {
				if a.Number == 1 {
					a1 = *a
				}
			}}))
		req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
		start := time.Now()
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(a1.RetryAfterErr, ErrRetryAfter) {
			t.Errorf("RetryAfterErr = %v; want one matching ErrRetryAfter", a1.RetryAfterErr)
		}
		if a1.Sleep != 3*time.Second || a1.SleepSource != SleepBackoff || time.Since(start) != 3*time.Second {
			t.Errorf("wait %v from %q, took %v; want 3s from %q", a1.Sleep, a1.SleepSource, time.Since(start), SleepBackoff)
		}
	})
}

// TestAttemptTimeoutBoundsEachAttempt: against a server that never answers,
// each attempt ends at the attempt timeout and counts as a timeout.
func TestAttemptTimeoutBoundsEachAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &fakeRT{block: true}
		var classes []Class
		tr := NewTransport(rt, WithAttemptTimeout(2*time.Second), WithBackoff(0, 0),
			WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) { classes = append(classes, a.Class) }}))
		req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
		start := time.Now()
		_, err := tr.RoundTrip(req)
		var ee *ExhaustedError
		if !errors.As(err, &ee) || ee.Attempts != 3 || ee.Reason != ReasonAttempts || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("RoundTrip error %v; want exhausted after 3 attempts, wrapping DeadlineExceeded", err)
		}
		if el := time.Since(start); el != 6*time.Second {
			t.Errorf("took %v of fake time; want 6s (3 attempts of 2s)", el)
		}
		for i, c := range classes {
			if c != ClassTimeout {
				t.Errorf("attempt %d class %s; want %s", i+1, c, ClassTimeout)
			}
		}
	})
}

// TestNoWaitPastDeadline: a backoff that would end after the deadline is
// not started.
func TestNoWaitPastDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &fakeRT{status: 502}
		tr := NewTransport(rt, WithBackoff(2*time.Second, 2*time.Second), WithJitter(JitterNone), WithMaxAttempts(10))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/", nil)
		start := time.Now()
		resp, err := tr.RoundTrip(req)
		if err != nil || resp.StatusCode != 502 {
			t.Fatalf("RoundTrip = %v, %v; want the 502", resp, err)
		}
		// Waits at 0→2s and 2→4s fit; a third would end at 6s > 5s.
		if rt.calls != 3 || time.Since(start) != 4*time.Second {
			t.Errorf("%d attempts in %v; want 3 in 4s", rt.calls, time.Since(start))
		}
	})
}
