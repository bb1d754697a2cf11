package middleware

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tankhttp/tank/internal/frontdoor"
)

// reply is what the fake server does with one copy: wait, then answer
// status (0: fail with err). It honours the copy's context.
type reply struct {
	after  time.Duration
	status int
	err    error
}

// copyServer is an in-memory server for hedging tests: call i gets
// script[i] (the last repeats). It counts what a user would count at the
// server: copies received, bodies read, copies in flight at once, and
// response bodies still open.
type copyServer struct {
	script []reply

	mu       sync.Mutex
	calls    int
	bodies   []string
	inflight int
	peak     int
	open     int // response bodies handed out and not closed
	canceled int // copies whose context ended before their reply
	methods  []string
}

func (s *copyServer) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	i := min(s.calls, len(s.script)-1)
	s.calls++
	s.inflight++
	s.peak = max(s.peak, s.inflight)
	s.methods = append(s.methods, req.Method)
	s.mu.Unlock()
	defer func() { s.mu.Lock(); s.inflight--; s.mu.Unlock() }()

	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	s.mu.Lock()
	s.bodies = append(s.bodies, string(body))
	s.mu.Unlock()

	r := s.script[i]
	if err := afterOrDone(req.Context(), r.after); err != nil {
		s.mu.Lock()
		s.canceled++
		s.mu.Unlock()
		return nil, err
	}
	if r.err != nil {
		return nil, r.err
	}
	s.mu.Lock()
	s.open++
	s.mu.Unlock()
	return &http.Response{StatusCode: r.status, Header: http.Header{}, Request: req,
		Body: &serverBody{Reader: strings.NewReader("copy " + string(rune('0'+i))), s: s}}, nil
}

// afterOrDone waits d, or until ctx ends: then it returns ctx's error.
func afterOrDone(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// mustPanic calls f and fails unless it panics with want.
func mustPanic(t *testing.T, want any, f func()) {
	t.Helper()
	defer func() {
		if v := recover(); v != want {
			t.Errorf("recovered %v; want the panic %v", v, want)
		}
	}()
	f()
	t.Error("no panic")
}

type serverBody struct {
	*strings.Reader
	s      *copyServer
	closed bool
}

func (b *serverBody) Close() error {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if !b.closed {
		b.closed = true
		b.s.open--
	}
	return nil
}

func (s *copyServer) stats() (calls, peak, open int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.peak, s.open
}

// hookLog records every hook call of a request, and fails on hooks of one
// request that overlap.
type hookLog struct {
	t      *testing.T
	busy   atomic.Int32
	mu     sync.Mutex
	events []string
	ends   []Attempt
}

func (l *hookLog) enter() func() {
	if l.busy.Add(1) != 1 {
		l.t.Error("hooks of one request ran at the same time")
	}
	return func() { l.busy.Add(-1) }
}

func (l *hookLog) add(e string) { l.mu.Lock(); l.events = append(l.events, e); l.mu.Unlock() }

func (l *hookLog) hooks() Hooks {
	return Hooks{
		AttemptStart: func(ctx context.Context, a *Attempt) context.Context {
			defer l.enter()()
			l.add("start " + itoa(a.Number) + hedgeMark(a))
			return nil
		},
		AttemptEnd: func(ctx context.Context, a *Attempt) {
			defer l.enter()()
			l.add("end " + itoa(a.Number) + hedgeMark(a) + " " + a.Reason.String())
			l.mu.Lock()
			l.ends = append(l.ends, *a)
			l.mu.Unlock()
		},
		RequestEnd: func(ctx context.Context, last *Attempt) {
			defer l.enter()()
			l.add("request " + itoa(last.Number) + " " + last.Reason.String())
		},
	}
}

func (l *hookLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

func hedgeMark(a *Attempt) string {
	if a.Hedge {
		return " hedge"
	}
	return ""
}

func itoa(n int) string { return string(rune('0' + n)) }

// get sends one request through rt and reads and closes the response.
func get(t *testing.T, rt http.RoundTripper, req *http.Request) (status int, body string, err error) {
	t.Helper()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), nil
}

func TestHedgeWinsOverStalledCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &copyServer{script: []reply{{after: time.Hour, status: 200}, {after: 5 * time.Millisecond, status: 200}}}
		log := &hookLog{t: t}
		var out Outcome
		rt := NewTransport(srv, WithHedging(20*time.Millisecond, 1), WithHooks(log.hooks()))
		req, _ := http.NewRequestWithContext(WithOutcome(context.Background(), &out), "GET", "http://x/", nil)
		start := time.Now()
		status, body, err := get(t, rt, req)
		if err != nil || status != 200 || body != "copy 1" {
			t.Fatalf("got %d %q %v; want the hedge's 200", status, body, err)
		}
		if d := time.Since(start); d != 25*time.Millisecond {
			t.Errorf("answered after %v; want 25ms (20ms delay + the hedge's 5ms)", d)
		}
		if out.Attempts != 2 || out.Reason != ReasonFinal {
			t.Errorf("Outcome = %+v; want 2 attempts, final", out)
		}
		synctest.Wait() // the loser is reaped in the background
		calls, peak, open := srv.stats()
		if calls != 2 || peak != 2 || open != 0 || srv.canceled != 1 {
			t.Errorf("server: %d copies, %d at once, %d bodies open, %d cancelled; want 2, 2, 0, 1", calls, peak, open, srv.canceled)
		}
		want := []string{"start 1", "start 2 hedge", "end 2 hedge final", "end 1 superseded", "request 2 final"}
		if got := log.get(); !slices.Equal(got, want) {
			t.Errorf("hooks:\n got %q\nwant %q", got, want)
		}
	})
}

// A POST without a key is never hedged: it waits for its one copy.
// With a key, or as PUT, it is.
func TestHedgeOnlyWhatIsSafeTwice(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		key    string
		body   func() io.Reader
		copies int
	}{
		{"GET", "GET", "", nil, 2},
		{"PUT with GetBody", "PUT", "", func() io.Reader { return strings.NewReader("payload") }, 2},
		{"POST", "POST", "", func() io.Reader { return strings.NewReader("payload") }, 1},
		{"POST no body", "POST", "", nil, 1},
		{"POST with key", "POST", "k1", func() io.Reader { return strings.NewReader("payload") }, 2},
		{"POST with empty key", "POST", " ", func() io.Reader { return strings.NewReader("payload") }, 1},
		{"PUT without GetBody", "PUT", "", func() io.Reader { return io.MultiReader(strings.NewReader("payload")) }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := &copyServer{script: []reply{{after: 100 * time.Millisecond, status: 200}, {after: 100 * time.Millisecond, status: 200}}}
				log := &hookLog{t: t}
				rt := NewTransport(srv, WithHedging(10*time.Millisecond, 3), WithHooks(log.hooks()))
				var body io.Reader
				if tc.body != nil {
					body = tc.body()
				}
				req, _ := http.NewRequest(tc.method, "http://x/", body)
				if tc.key != "" {
					req.Header.Set("Idempotency-Key", tc.key)
				}
				if _, _, err := get(t, rt, req); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				calls, _, open := srv.stats()
				// Copies at 0, 10 and 20ms; the first answers at 100ms.
				want := map[int]int{1: 1, 2: 3}[tc.copies]
				if calls != want || open != 0 {
					t.Errorf("%d copies at the server, %d bodies open; want %d, 0", calls, open, want)
				}
				for _, b := range srv.bodies {
					if tc.body != nil && b != "payload" {
						t.Errorf("a copy carried %q; want the whole body", b)
					}
				}
				for _, a := range log.ends {
					if a.Hedge && tc.copies == 1 {
						t.Errorf("attempt %d of a request not safe to send twice was a hedge", a.Number)
					}
				}
			})
		})
	}
}

// WithMaxAttempts counts every copy: with 2, one hedge at most.
func TestHedgeCountsAgainstMaxAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &copyServer{script: []reply{{after: time.Second, status: 200}}}
		rt := NewTransport(srv, WithHedging(10*time.Millisecond, 5), WithMaxAttempts(2))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		start := time.Now()
		if _, _, err := get(t, rt, req); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("took %v; want 1s (the first copy)", d)
		}
		synctest.Wait()
		if calls, peak, open := srv.stats(); calls != 2 || peak != 2 || open != 0 {
			t.Errorf("%d copies, %d at once, %d open; want 2, 2, 0", calls, peak, open)
		}
	})
}

// maxHedges bounds the extra copies in flight at once.
func TestHedgeMaxInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &copyServer{script: []reply{{after: time.Second, status: 200}}}
		rt := NewTransport(srv, WithHedging(10*time.Millisecond, 2), WithMaxAttempts(10))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		if _, _, err := get(t, rt, req); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if calls, peak, open := srv.stats(); calls != 3 || peak != 3 || open != 0 {
			t.Errorf("%d copies, %d at once, %d open; want 3, 3, 0", calls, peak, open)
		}
	})
}

// Each hedge draws a budget token; with none left, the request waits for
// its copy.
func TestHedgePaidFromBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := NewBudget(0, 0, nil) // one token, never refilled
		if err != nil {
			t.Fatal(err)
		}
		srv := &copyServer{script: []reply{{after: 100 * time.Millisecond, status: 200}}}
		log := &hookLog{t: t}
		rt := NewTransport(srv, WithHedging(10*time.Millisecond, 1), WithBudget(b), WithHooks(log.hooks()))
		for range 3 {
			req, _ := http.NewRequest("GET", "http://x/", nil)
			if _, _, err := get(t, rt, req); err != nil {
				t.Fatal(err)
			}
			synctest.Wait() // one request's hooks at a time: the log is shared
		}
		if calls, _, open := srv.stats(); calls != 4 || open != 0 {
			t.Errorf("%d copies for 3 requests, %d open; want 4 (one hedge, paid by the one token), 0", calls, open)
		}
		for _, a := range log.ends {
			if a.BudgetTokens < 0 {
				t.Errorf("attempt %d: BudgetTokens %v; want the bucket's level", a.Number, a.BudgetTokens)
			}
		}
	})
}

// A copy that fails while another is in flight is dropped; the other
// still wins. When the last copy fails, the request retries as usual.
func TestHedgeFailedCopies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &copyServer{script: []reply{
			{after: 50 * time.Millisecond, status: 503}, // first copy: fails last
			{after: 5 * time.Millisecond, status: 503},  // hedge at 10ms: fails first, dropped
			{after: 1 * time.Millisecond, status: 200},  // the retry after the wait
		}}
		log := &hookLog{t: t}
		rt := NewTransport(srv, WithHedging(10*time.Millisecond, 1), WithMaxAttempts(3),
			WithBackoff(20*time.Millisecond, 20*time.Millisecond), WithJitter(JitterNone), WithHooks(log.hooks()))
		req, _ := http.NewRequest("GET", "http://x/", nil)
		start := time.Now()
		status, body, err := get(t, rt, req)
		if err != nil || status != 200 || body != "copy 2" {
			t.Fatalf("got %d %q %v; want the retry's 200", status, body, err)
		}
		if d := time.Since(start); d != 71*time.Millisecond {
			t.Errorf("took %v; want 71ms (first copy's 503 at 50ms, 20ms wait, 1ms)", d)
		}
		want := []string{"start 1", "start 2 hedge", "end 2 hedge not_processed", "end 1 not_processed", "start 3", "end 3 final", "request 3 final"}
		if got := log.get(); !slices.Equal(got, want) {
			t.Errorf("hooks:\n got %q\nwant %q", got, want)
		}
		if a := log.ends[0]; a.Verdict != Retry || a.Sleep != 0 {
			t.Errorf("dropped copy: %v, sleep %v; want retry with no wait", a.Verdict, a.Sleep)
		}
		if a := log.ends[1]; a.Verdict != Retry || a.Sleep != 20*time.Millisecond {
			t.Errorf("last failed copy: %v, sleep %v; want retry after 20ms", a.Verdict, a.Sleep)
		}
		synctest.Wait()
		if _, _, open := srv.stats(); open != 0 {
			t.Errorf("%d bodies open", open)
		}
	})
}

// The caller giving up ends every copy.
func TestHedgeCallerCancels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &copyServer{script: []reply{{after: time.Hour, status: 200}}}
		log := &hookLog{t: t}
		rt := NewTransport(srv, WithHedging(10*time.Millisecond, 2), WithHooks(log.hooks()))
		ctx, cancel := context.WithTimeout(context.Background(), 35*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://x/", nil)
		_, err := rt.RoundTrip(req)
		var ex *ExhaustedError
		if !errors.As(err, &ex) || ex.Reason != ReasonCanceled || ex.Attempts != 3 {
			t.Fatalf("err = %v; want canceled after 3 copies", err)
		}
		synctest.Wait()
		if calls, _, open := srv.stats(); calls != 3 || open != 0 || srv.canceled != 3 {
			t.Errorf("%d copies, %d open, %d cancelled; want 3, 0, 3", calls, open, srv.canceled)
		}
		got := log.get()
		if last := got[len(got)-1]; !strings.HasPrefix(last, "request ") || !strings.HasSuffix(last, " canceled") {
			t.Errorf("hooks end with %q; want RequestEnd, canceled", last)
		}
		if len(got) != 7 {
			t.Errorf("hooks: %q; want 3 starts, 3 ends and RequestEnd", got)
		}
	})
}

// The adaptive delay is learnt from the host's first copies: none until 50
// have answered, then about their 95th percentile.
func TestAdaptiveHedging(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opt := WithAdaptiveHedging(0.95, 1)
		srv := &copyServer{script: []reply{{after: 10 * time.Millisecond, status: 200}}}
		rt := NewTransport(srv, opt)
		send := func() {
			req, _ := http.NewRequest("GET", "http://x/", nil)
			if _, _, err := get(t, rt, req); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		for range 50 {
			send()
		}
		if calls, _, _ := srv.stats(); calls != 50 {
			t.Fatalf("%d copies for 50 requests at 10ms; want no hedge", calls)
		}
		// Now a slow one: hedged at about 10ms (the learnt p95, within 10%).
		srv.mu.Lock()
		srv.script = append(srv.script[:0:0], reply{after: time.Second, status: 200}, reply{after: time.Millisecond, status: 200})
		srv.calls = 0
		srv.mu.Unlock()
		start := time.Now()
		send()
		if d := time.Since(start); d < 11*time.Millisecond || d > 12*time.Millisecond {
			t.Errorf("slow request took %v; want the learnt delay (10-11ms) plus 1ms", d)
		}
		// A second front door given the same Option shares what was learnt.
		srv.mu.Lock()
		srv.calls = 0
		srv.mu.Unlock()
		rt = NewTransport(srv, opt)
		start = time.Now()
		send()
		if d := time.Since(start); d > 12*time.Millisecond {
			t.Errorf("slow request on a new Transport took %v; want it hedged with the shared delay", d)
		}
	})
}

func TestHedgingOptionErrors(t *testing.T) {
	for _, o := range []Option{
		WithHedging(0, 1), WithHedging(-time.Second, 1), WithHedging(time.Millisecond, -1),
		WithAdaptiveHedging(0, 1), WithAdaptiveHedging(1, 1), WithAdaptiveHedging(0.9, -1),
	} {
		var oe *OptionError
		if _, err := newPolicy(o); !errors.As(err, &oe) {
			t.Errorf("err = %v; want *OptionError", err)
		}
	}
	// maxHedges 0 turns hedging off.
	if p, err := newPolicy(WithHedging(time.Millisecond, 0)); err != nil || p.hedge != nil {
		t.Errorf("WithHedging(1ms, 0): %v, %v; want hedging off", p.hedge, err)
	}
	if p, err := newPolicy(WithHedging(time.Millisecond, 1), WithHedging(time.Millisecond, 0)); err != nil || p.hedge != nil {
		t.Errorf("a later WithHedging(_, 0): %v, %v; want hedging off", p.hedge, err)
	}
}

// Each copy gets a whole body of its own from GetBody, and the caller's
// body is closed once.
func TestHedgeBodies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &copyServer{script: []reply{{after: time.Hour, status: 200}, {after: time.Hour, status: 200}, {after: time.Millisecond, status: 200}}}
		rt := NewTransport(srv, WithHedging(10*time.Millisecond, 2))
		payload := bytes.Repeat([]byte("0123456789"), 1000)
		req, _ := http.NewRequest("PUT", "http://x/", bytes.NewReader(payload))
		cc := &closeCounter{Reader: req.Body}
		req.Body = cc
		getBody := req.GetBody
		var gets atomic.Int32
		req.GetBody = func() (io.ReadCloser, error) { gets.Add(1); return getBody() }
		if status, _, err := get(t, rt, req); err != nil || status != 200 {
			t.Fatal(status, err)
		}
		synctest.Wait()
		if n := len(srv.bodies); n != 3 {
			t.Fatalf("%d bodies at the server; want 3", n)
		}
		for i, b := range srv.bodies {
			if b != string(payload) {
				t.Errorf("copy %d carried %d bytes; want the whole %d", i+1, len(b), len(payload))
			}
		}
		if c := cc.closes.Load(); c != 1 || gets.Load() != 2 {
			t.Errorf("caller's body closed %d times, GetBody called %d times; want 1, 2", c, gets.Load())
		}
	})
}

// rtFuncN gives call i (from 0) to f.
type rtFuncN struct {
	n atomic.Int32
	f func(i int, req *http.Request) (*http.Response, error)
}

func (r *rtFuncN) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.f(int(r.n.Add(1)-1), req)
}

func okResponse(req *http.Request) *http.Response {
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok")), Request: req}
}

// Hostile transports under hedging: a panic in a copy reaches the caller
// (the other copies are cancelled and reaped); a copy that ignores its
// cancellation does not hold the winner back; (nil, nil) from a copy is
// an error judged like any other.
func TestHedgeHostileTransports(t *testing.T) {
	t.Run("panic in a hedge", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var firstCanceled, requestEnd atomic.Bool
			var ends atomic.Int32
			rt := NewTransport(&rtFuncN{f: func(i int, req *http.Request) (*http.Response, error) {
				if i == 0 {
					<-req.Context().Done()
					firstCanceled.Store(true)
					return nil, req.Context().Err()
				}
				panic("boom")
			}}, WithHedging(10*time.Millisecond, 1), WithHooks(Hooks{
				AttemptEnd: func(_ context.Context, a *Attempt) { ends.Add(1) },
				RequestEnd: func(context.Context, *Attempt) { requestEnd.Store(true) },
			}))
			req, _ := http.NewRequest("GET", "http://x/", nil)
			mustPanic(t, "boom", func() { rt.RoundTrip(req) })
			synctest.Wait()
			if !firstCanceled.Load() {
				t.Error("the first copy was not cancelled")
			}
			// As without hedging, a request that ends in a panic has no
			// RequestEnd; the first copy, reaped, still has its AttemptEnd.
			if requestEnd.Load() || ends.Load() != 1 {
				t.Errorf("RequestEnd ran: %v; AttemptEnd ran %d times; want false, 1", requestEnd.Load(), ends.Load())
			}
		})
	})
	t.Run("loser ignores cancel", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			release := make(chan struct{})
			var requestEnd atomic.Bool
			rt := NewTransport(&rtFuncN{f: func(i int, req *http.Request) (*http.Response, error) {
				if i == 0 {
					<-release // deaf to its context
					return okResponse(req), nil
				}
				return okResponse(req), nil
			}}, WithHedging(10*time.Millisecond, 1), WithHooks(Hooks{
				RequestEnd: func(context.Context, *Attempt) { requestEnd.Store(true) },
			}))
			req, _ := http.NewRequest("GET", "http://x/", nil)
			start := time.Now()
			if status, _, err := get(t, rt, req); err != nil || status != 200 {
				t.Fatal(status, err)
			}
			if d := time.Since(start); d != 10*time.Millisecond {
				t.Errorf("the winner came back after %v; want 10ms", d)
			}
			synctest.Wait()
			if requestEnd.Load() {
				t.Error("RequestEnd ran before the loser returned")
			}
			close(release)
			synctest.Wait()
			if !requestEnd.Load() {
				t.Error("RequestEnd did not run once the loser returned")
			}
		})
	})
	t.Run("nil response from a hedge", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			log := &hookLog{t: t}
			rt := NewTransport(&rtFuncN{f: func(i int, req *http.Request) (*http.Response, error) {
				if i == 0 {
					time.Sleep(50 * time.Millisecond)
					return okResponse(req), nil
				}
				return nil, nil
			}}, WithHedging(10*time.Millisecond, 1), WithHooks(log.hooks()))
			req, _ := http.NewRequest("GET", "http://x/", nil)
			if status, _, err := get(t, rt, req); err != nil || status != 200 {
				t.Fatal(status, err)
			}
			synctest.Wait()
			if a := log.ends[0]; !a.Hedge || !errors.Is(a.Err, ErrNilResponse) || a.Verdict != Retry {
				t.Errorf("hedge: %+v; want ErrNilResponse, dropped with a Retry verdict", a)
			}
		})
	})
	t.Run("GetBody fails for a hedge", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv := &copyServer{script: []reply{{after: 50 * time.Millisecond, status: 200}}}
			b, _ := NewBudget(0.5, 0, nil)
			rt := NewTransport(srv, WithHedging(10*time.Millisecond, 1), WithBudget(b))
			req, _ := http.NewRequest("PUT", "http://x/", strings.NewReader("payload"))
			req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("gone") }
			before := b.level(req, time.Now())
			if status, _, err := get(t, rt, req); err != nil || status != 200 {
				t.Fatal(status, err)
			}
			if calls, _, _ := srv.stats(); calls != 1 {
				t.Errorf("%d copies; want 1 (no body for a hedge)", calls)
			}
			// The request deposited 0.5; the hedge's token was given back.
			if after := b.level(req, time.Now()); after < before {
				t.Errorf("budget %v before, %v after; want the hedge's token refunded", before, after)
			}
		})
	})
}

func TestHedgeNotForBackoffFrontDoor(t *testing.T) {
	// Through the engine's registration, as adapters/backoffretry uses it.
	req, _ := http.NewRequest("GET", "http://x/", strings.NewReader("b"))
	cc := &closeCounter{Reader: req.Body}
	req.Body = cc
	_, err := frontdoor.NewRun[Option, *Attempt](req, nil, WithHedging(time.Millisecond, 1))
	var oe *OptionError
	if !errors.As(err, &oe) || oe.Option != "WithHedging" {
		t.Fatalf("err = %v; want *OptionError for WithHedging", err)
	}
	if cc.closes.Load() != 1 {
		t.Errorf("body closed %d times; want 1", cc.closes.Load())
	}
}

func TestHedgeLogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		var mu sync.Mutex
		l := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, &slog.HandlerOptions{
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}}))
		srv := &copyServer{script: []reply{{after: time.Hour, status: 200}, {after: time.Millisecond, status: 200}}}
		rt := NewTransport(srv, WithHedging(10*time.Millisecond, 1), WithLogger(l))
		req, _ := http.NewRequest("GET", "http://x/a?secret=1", nil)
		if _, _, err := get(t, rt, req); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		want := `level=INFO msg="tank: succeeded on a hedge" attempt=2 class=final reason=final hedge=true status=200 method=GET url=http://x/a` + "\n"
		if got := buf.String(); got != want {
			t.Errorf("logged:\n%s\nwant:\n%s", got, want)
		}
	})
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// With the bucket empty, a hedge is asked for again after twice the wait
// each time (at 10ms, then 30, 70, 150ms...), so another request's deposit
// can still pay for it, and an empty bucket is not polled every delay.
func TestHedgeAsksAnEmptyBudgetLessAndLess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := NewBudget(0.1, 0, nil) // holds 1 token at most, none earned by time
		req0, _ := http.NewRequest("GET", "http://x/", nil)
		for {
			if _, ok := b.withdraw(req0, time.Now()); !ok {
				break
			}
		}
		srv := &copyServer{script: []reply{{after: time.Second, status: 200}, {after: time.Millisecond, status: 200}}}
		rt := NewTransport(srv, WithHedging(10*time.Millisecond, 1), WithBudget(b))
		go func() {
			time.Sleep(50 * time.Millisecond)
			b.refund(req0, time.Now()) // a token from elsewhere, at 50ms
		}()
		req, _ := http.NewRequest("GET", "http://x/", nil)
		start := time.Now()
		if status, body, err := get(t, rt, req); err != nil || status != 200 || body != "copy 1" {
			t.Fatalf("got %d %q %v; want the hedge's answer", status, body, err)
		}
		// Asked at 10ms and 30ms (refused), then at 70ms: paid, sent, and
		// answered 1ms later. Polling every delay would have sent it at 50ms.
		if d := time.Since(start); d != 71*time.Millisecond {
			t.Errorf("answered after %v; want 71ms", d)
		}
		synctest.Wait()
	})
}
