package middleware

// The hostile-neighbour suite: wrapped transports, hooks, classifiers and
// option values that break their contracts or change their minds. tank
// must not panic on a neighbour's bug, must not send a request twice that
// it may not, and must keep its word on waits and bodies.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tankhttp/tank/internal/testsupport/faultserver"
)

// rtFunc adapts a function to http.RoundTripper.
type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// silentRT answers from a script and fires no httptrace event, like a
// mock, a recording or caching RoundTripper, or a stack that runs the
// request under a context of its own. It records whether each attempt was
// processed by the "server" it stands for.
type silentRT struct {
	answer    func(n int) (*http.Response, error)
	calls     int
	processed int
}

func (s *silentRT) RoundTrip(req *http.Request) (*http.Response, error) {
	s.calls++
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	resp, err := s.answer(s.calls)
	if resp == nil || (resp.StatusCode != 429 && resp.StatusCode != 502 && resp.StatusCode != 503) {
		s.processed++ // the server read the request, then the answer was lost
	}
	return resp, err
}

func newReq(t *testing.T, method, url string, body string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestNoTraceEventsMeansMaySent: a transport that reports nothing leaves
// the send state unknown, and unknown must count as "may have been sent":
// a POST read and then reset is processed once, not three times.
func TestNoTraceEventsMeansMaybeSent(t *testing.T) {
	for _, tt := range []struct {
		method    string
		err       error
		wantCalls int
		wantClass Class
	}{
		{http.MethodPost, syscall.ECONNRESET, 1, ClassReset},
		{http.MethodPost, io.EOF, 1, ClassEOF},
		{http.MethodPost, errors.New("recorder: replay mismatch"), 1, ClassTransport},
		{http.MethodGet, syscall.ECONNRESET, 3, ClassReset},
	} {
		t.Run(tt.method+"/"+tt.err.Error(), func(t *testing.T) {
			rt := &silentRT{answer: func(int) (*http.Response, error) { return nil, tt.err }}
			var got []Attempt
			tr := NewTransport(rt, WithBackoff(0, 0), WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) { got = append(got, *a) }}))
			_, err := tr.RoundTrip(newReq(t, tt.method, "http://api.test/", "order"))
			if rt.calls != tt.wantCalls || rt.processed != tt.wantCalls {
				t.Errorf("%d attempts, %d processed; want %d", rt.calls, rt.processed, tt.wantCalls)
			}
			var ee *ExhaustedError
			if !errors.As(err, &ee) || !errors.Is(err, tt.err) {
				t.Fatalf("RoundTrip error = %v; want *ExhaustedError wrapping %v", err, tt.err)
			}
			if a := got[0]; a.Class != tt.wantClass || !a.Sent {
				t.Errorf("first attempt: class %s, Sent %v; want %s, true", a.Class, a.Sent, tt.wantClass)
			}
		})
	}
	// Plain as well as hooked: the success path traces its own send state.
	rt := &silentRT{answer: func(int) (*http.Response, error) { return nil, syscall.ECONNRESET }}
	NewTransport(rt, WithBackoff(0, 0)).RoundTrip(newReq(t, http.MethodPost, "http://api.test/", "order"))
	if rt.processed != 1 {
		t.Errorf("plain path: POST processed %d times; want 1", rt.processed)
	}
}

// TestDroppedContextOverRealServer: a wrapping transport that runs the
// request under a fresh context hides every trace event from tank; a POST
// the server read before resetting the connection is still sent once.
func TestDroppedContextOverRealServer(t *testing.T) {
	srv := faultserver.NewRaw(faultserver.ReadRST)
	defer srv.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	dropCtx := rtFunc(func(r *http.Request) (*http.Response, error) {
		return base.RoundTrip(r.WithContext(context.Background()))
	})
	for _, tt := range []struct {
		method   string
		wantHits int
	}{{http.MethodPost, 1}, {http.MethodPut, 3}} {
		before := srv.Hits()
		_, err := NewTransport(dropCtx, WithBackoff(0, 0)).RoundTrip(newReq(t, tt.method, srv.URL, "order-42"))
		if hits := srv.Hits() - before; hits != tt.wantHits || err == nil {
			t.Errorf("%s: server read the request %d times, error %v; want %d and an error", tt.method, hits, err, tt.wantHits)
		}
	}
}

// TestMisbehavingTransport: answers net/http's Client would reject become
// errors or fixed-up responses, never panics or leaks.
func TestMisbehavingTransport(t *testing.T) {
	t.Run("nil response, nil error", func(t *testing.T) {
		for _, tt := range []struct {
			method    string
			wantCalls int
		}{{http.MethodGet, 3}, {http.MethodPost, 1}} {
			rt := &silentRT{answer: func(int) (*http.Response, error) { return nil, nil }}
			body := &closeCounter{Reader: strings.NewReader("x")}
			req := newReq(t, tt.method, "http://api.test/", "")
			req.Body = body
			resp, err := NewTransport(rt, WithBackoff(0, 0)).RoundTrip(req)
			var ee *ExhaustedError
			if resp != nil || !errors.Is(err, ErrNilResponse) || !errors.As(err, &ee) || rt.calls != tt.wantCalls {
				t.Errorf("%s: RoundTrip = %v, %v after %d calls; want an *ExhaustedError wrapping ErrNilResponse after %d", tt.method, resp, err, rt.calls, tt.wantCalls)
			}
			if c := body.closes.Load(); c != 1 {
				t.Errorf("%s: request body closed %d times; want 1", tt.method, c)
			}
		}
	})
	t.Run("nil body", func(t *testing.T) {
		for _, code := range []int{503, 200} {
			rt := &silentRT{answer: func(n int) (*http.Response, error) {
				if n == 1 {
					return &http.Response{StatusCode: code, Header: http.Header{}}, nil
				}
				return &http.Response{StatusCode: 200}, nil
			}}
			resp, err := NewTransport(rt, WithBackoff(0, 0)).RoundTrip(newReq(t, http.MethodGet, "http://api.test/", ""))
			if err != nil || resp.StatusCode != 200 || resp.Body != http.NoBody {
				t.Fatalf("first answer %d: RoundTrip = %v, %v; want 200 with http.NoBody", code, resp, err)
			}
			resp.Body.Close()
		}
	})
	t.Run("response and error", func(t *testing.T) {
		var closed atomic.Int32
		rt := &silentRT{answer: func(n int) (*http.Response, error) {
			if n == 1 {
				b := &closeCounter{Reader: strings.NewReader("stray")}
				defer func() { closed.Store(b.closes.Load()) }()
				return &http.Response{StatusCode: 200, Body: b}, syscall.ECONNRESET
			}
			return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
		}}
		var first *Attempt
		h := Hooks{AttemptEnd: func(_ context.Context, a *Attempt) {
			if first == nil {
				c := *a
				first = &c
			}
		}}
		resp, err := NewTransport(rt, WithBackoff(0, 0), WithHooks(h)).RoundTrip(newReq(t, http.MethodGet, "http://api.test/", ""))
		if err != nil || rt.calls != 2 {
			t.Fatalf("RoundTrip = %v after %d calls; want a response after 2", err, rt.calls)
		}
		resp.Body.Close()
		if first.Response != nil || !errors.Is(first.Err, syscall.ECONNRESET) || first.Class != ClassReset {
			t.Errorf("first attempt: response %v, error %v, class %s; want the error alone, class reset", first.Response, first.Err, first.Class)
		}
	})
	t.Run("panic propagates", func(t *testing.T) {
		boom := errors.New("boom")
		calls := 0
		tr := NewTransport(rtFunc(func(*http.Request) (*http.Response, error) {
			calls++
			if calls == 1 {
				panic(boom)
			}
			return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
		}))
		func() {
			defer func() {
				if r := recover(); r != boom {
					t.Errorf("recovered %v; want the transport's own panic value", r)
				}
			}()
			tr.RoundTrip(newReq(t, http.MethodGet, "http://api.test/", ""))
		}()
		if resp, err := tr.RoundTrip(newReq(t, http.MethodGet, "http://api.test/", "")); err != nil || resp.StatusCode != 200 {
			t.Errorf("after a panic, RoundTrip = %v, %v; want the Transport to keep working", resp, err)
		}
	})
}

// TestSlowClose: a retried response whose Close takes long delays the next
// attempt, but no attempt starts after the caller's deadline and the
// request ends when Close returns.
func TestSlowClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &silentRT{answer: func(int) (*http.Response, error) {
			return &http.Response{StatusCode: 503, Body: slowCloser{2 * time.Second}}, nil
		}}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req := newReq(t, http.MethodGet, "http://api.test/", "").WithContext(ctx)
		start := time.Now()
		_, err := NewTransport(rt, WithBackoff(0, 0)).RoundTrip(req)
		if el := time.Since(start); el != 2*time.Second || rt.calls != 1 {
			t.Errorf("returned after %v with %d attempts; want at 2s (Close's end) with 1", el, rt.calls)
		}
		if !errors.Is(err, ReasonCanceled) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("RoundTrip error = %v; want ReasonCanceled and the deadline", err)
		}
	})
}

type slowCloser struct{ d time.Duration }

func (slowCloser) Read([]byte) (int, error) { return 0, io.EOF }
func (s slowCloser) Close() error           { time.Sleep(s.d); return nil }

// TestZeroTransport: &Transport{} wraps http.DefaultTransport with the
// default policy.
func TestZeroTransport(t *testing.T) {
	srv := newScripted(t, 503, 200)
	resp, err := roundTripAndClose(t, &Transport{}, newReq(t, http.MethodGet, srv.URL, ""))
	if err != nil || resp.StatusCode != 200 || srv.Hits() != 2 {
		t.Errorf("zero Transport: %v, %v after %d hits; want 200 after 2", resp, err, srv.Hits())
	}
	(&Transport{}).CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// TestExtremeLimits: the largest limits work as "no limit".
func TestExtremeLimits(t *testing.T) {
	t.Run("buffer", func(t *testing.T) {
		srv := newScripted(t, 503, 200)
		req := newReq(t, http.MethodPut, srv.URL, "")
		req.Body = io.NopCloser(strings.NewReader("same bytes")) // no GetBody
		resp, err := roundTripAndClose(t, NewTransport(nil, WithBackoff(0, 0), WithBufferLimit(math.MaxInt64)), req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("RoundTrip = %v, %v; want 200", resp, err)
		}
		for i, b := range srv.Bodies() {
			if string(b) != "same bytes" {
				t.Errorf("hit %d: server read %q; want %q", i+1, b, "same bytes")
			}
		}
	})
	t.Run("drain", func(t *testing.T) {
		big := strings.Repeat("x", 256<<10) // past the default drain limit
		hs := newHandlerServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Attempt") == "" {
				w.WriteHeader(503)
				io.WriteString(w, big)
			}
		}))
		base, dialer := newClientTransport(t)
		tr := NewTransport(base, WithBackoff(0, 0), WithDrainLimit(math.MaxInt64), WithAttemptHeader("X-Attempt"))
		resp, err := roundTripAndClose(t, tr, newReq(t, http.MethodGet, hs.URL, ""))
		if err != nil || resp.StatusCode != 200 || dialer.Dialed() != 1 {
			t.Errorf("RoundTrip = %v, %v over %d connections; want 200 over 1 (the 256 KiB body drained, the connection reused)", resp, err, dialer.Dialed())
		}
	})
}

// TestEnabledAskedOnce: Hooks.Enabled is asked once per request, and its
// answer holds for every attempt, however it changes meanwhile (a program
// installing its OpenTelemetry SDK while a request waits to be retried).
func TestEnabledAskedOnce(t *testing.T) {
	for _, first := range []bool{false, true} {
		var asked, starts, ends, reqStarts, reqEnds int
		type key struct{}
		h := Hooks{
			Enabled: func(*http.Request) bool { asked++; return asked == 1 == first },
			RequestStart: func(ctx context.Context, _ *http.Request) context.Context {
				reqStarts++
				return context.WithValue(ctx, key{}, "request")
			},
			AttemptStart: func(ctx context.Context, _ *Attempt) context.Context {
				starts++
				return context.WithValue(ctx, key{}, "attempt")
			},
			AttemptEnd: func(ctx context.Context, _ *Attempt) {
				ends++
				_ = ctx.Value(key{}).(string) // panics without its AttemptStart
			},
			RequestEnd: func(ctx context.Context, _ *Attempt) {
				reqEnds++
				_ = ctx.Value(key{}).(string) // panics without its RequestStart
			},
		}
		srv := newScripted(t, 503, 503, 200)
		resp, err := roundTripAndClose(t, NewTransport(nil, WithBackoff(0, 0), WithHooks(h)), newReq(t, http.MethodGet, srv.URL, ""))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("first answer %v: RoundTrip = %v, %v", first, resp, err)
		}
		want := [5]int{1, 0, 0, 0, 0}
		if first {
			want = [5]int{1, 1, 3, 3, 1}
		}
		if got := [5]int{asked, reqStarts, starts, ends, reqEnds}; got != want {
			t.Errorf("first answer %v: Enabled, RequestStart, AttemptStart, AttemptEnd, RequestEnd ran %v times; want %v", first, got, want)
		}
	}
}

// TestHooksCannotChangeDecisions: what a hook or classifier writes to the
// Attempt is undone, so none can lengthen a wait past the deadline, turn a
// stop into a retry, or make a POST replayable.
func TestHooksCannotChangeDecisions(t *testing.T) {
	t.Run("sleep and verdict", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rt := &fakeRT{status: 503}
			var seen []time.Duration
			vandal := Hooks{AttemptEnd: func(_ context.Context, a *Attempt) {
				a.Sleep, a.Verdict, a.Reason = time.Hour, Retry, ReasonReplayable
			}}
			observer := Hooks{AttemptEnd: func(_ context.Context, a *Attempt) { seen = append(seen, a.Sleep) }}
			tr := NewTransport(rt, WithBackoff(time.Second, time.Second), WithJitter(JitterNone), WithHooks(vandal), WithHooks(observer))
			start := time.Now()
			resp, err := tr.RoundTrip(newReq(t, http.MethodGet, "http://api.test/", ""))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if el := time.Since(start); el != 2*time.Second || rt.calls != 3 {
				t.Errorf("%d attempts in %v; want 3 in 2s (two 1s waits, the hook's hour ignored)", rt.calls, el)
			}
			if want := []time.Duration{time.Second, time.Second, 0}; !slices.Equal(seen, want) {
				t.Errorf("the next hook saw sleeps %v; want %v, as tank decided", seen, want)
			}
		})
	})
	t.Run("classifier writes replayable", func(t *testing.T) {
		rt := &silentRT{answer: func(int) (*http.Response, error) { return nil, syscall.ECONNRESET }}
		forge := WithClassifier(func(a *Attempt) Verdict {
			a.Replayable, a.Class, a.Sent = true, ClassRefused, false
			return Pass
		})
		NewTransport(rt, WithBackoff(0, 0), forge).RoundTrip(newReq(t, http.MethodPost, "http://api.test/", "order"))
		if rt.processed != 1 {
			t.Errorf("POST processed %d times; want 1", rt.processed)
		}
	})
	t.Run("request end writes reason", func(t *testing.T) {
		rt := &silentRT{answer: func(int) (*http.Response, error) { return nil, syscall.ECONNRESET }}
		h := Hooks{RequestEnd: func(_ context.Context, a *Attempt) { a.Reason = ReasonFinal }}
		_, err := NewTransport(rt, WithBackoff(0, 0), WithHooks(h)).RoundTrip(newReq(t, http.MethodPost, "http://api.test/", "x"))
		if !errors.Is(err, ReasonNotReplayable) {
			t.Errorf("RoundTrip error = %v; want ReasonNotReplayable whatever RequestEnd wrote", err)
		}
	})
}

// TestBlockingHook: a hook that blocks until the caller gives up holds the
// request (hooks run on its goroutine, like httptrace's), and then the
// request ends at once: no further attempt, the body closed once.
func TestBlockingHook(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &fakeRT{status: 503}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h := Hooks{AttemptEnd: func(ctx context.Context, _ *Attempt) { <-ctx.Done() }}
		body := &closeCounter{Reader: strings.NewReader("x")}
		req := newReq(t, http.MethodPut, "http://api.test/", "").WithContext(ctx)
		req.Body = body
		start := time.Now()
		_, err := NewTransport(rt, WithBackoff(0, 0), WithHooks(h)).RoundTrip(req)
		if el := time.Since(start); el != 5*time.Second || rt.calls != 1 || !errors.Is(err, ReasonCanceled) {
			t.Errorf("returned after %v, %d attempts, %v; want 5s, 1, ReasonCanceled", el, rt.calls, err)
		}
		if c := body.closes.Load(); c != 1 {
			t.Errorf("request body closed %d times; want 1", c)
		}
	})
}

// TestTricklingBodyUnderDeadline: a body without GetBody is not read ahead
// of the transport, so a body that trickles out for 2s ends under a 300ms
// deadline at 300ms, as with bare net/http.
func TestTricklingBodyUnderDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A transport that writes the body as it comes, like net/http's: its
		// writer goroutine outlives an attempt cut by the deadline.
		var writer sync.WaitGroup
		defer writer.Wait()
		rt := rtFunc(func(req *http.Request) (*http.Response, error) {
			done := make(chan error, 1)
			writer.Add(1)
			go func() {
				defer writer.Done()
				_, err := io.Copy(io.Discard, req.Body)
				req.Body.Close()
				done <- err
			}()
			select {
			case <-done:
				return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
			case <-req.Context().Done():
				return nil, req.Context().Err()
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://api.test/", &trickle{left: 40, every: 50 * time.Millisecond})
		start := time.Now()
		_, err := NewTransport(rt).RoundTrip(req)
		if el := time.Since(start); el != 300*time.Millisecond || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("returned after %v with %v; want 300ms and the deadline", el, err)
		}
	})
}

// trickle yields one byte every interval.
type trickle struct {
	left  int
	every time.Duration
}

func (r *trickle) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.every)
	r.left--
	p[0] = 'x'
	return 1, nil
}

// TestRetryAfterBodyReadLazily: a body without GetBody read only in part
// by a failed attempt is replayed whole on the next.
func TestBodyReadInPartReplayedWhole(t *testing.T) {
	payload := bigPayload(64 << 10)
	var bodies [][]byte
	rt := &silentRT{answer: func(int) (*http.Response, error) { return &http.Response{StatusCode: 200}, nil }}
	calls := 0
	tr := NewTransport(rtFunc(func(req *http.Request) (*http.Response, error) {
		calls++
		if calls == 1 {
			// Reads a little, then is refused (never sent).
			io.ReadFull(req.Body, make([]byte, 1000))
			req.Body.Close()
			return nil, refusedErr()
		}
		b, _ := io.ReadAll(req.Body)
		req.Body.Close()
		bodies = append(bodies, b)
		return rt.RoundTrip(req)
	}), WithBackoff(0, 0))
	req := newReq(t, http.MethodPost, "http://api.test/", "")
	body := &closeCounter{Reader: bytes.NewReader(payload)}
	req.Body = body
	resp, err := tr.RoundTrip(req)
	if err != nil || resp.StatusCode != 200 || len(bodies) != 1 || !bytes.Equal(bodies[0], payload) {
		t.Fatalf("RoundTrip = %v, %v; want 200 with the second attempt reading the whole %d-byte body", resp, err, len(payload))
	}
	if c := body.closes.Load(); c != 1 {
		t.Errorf("caller's body closed %d times; want 1", c)
	}
}

// TestRFCRules: a negative Retry-After is malformed; a status outside
// 100-599 is a server error; an empty Idempotency-Key is no key.
func TestRFCRules(t *testing.T) {
	t.Run("negative Retry-After", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rt := &fakeRT{status: 503, retryAfter: "-2"}
			var errs []error
			h := Hooks{AttemptEnd: func(_ context.Context, a *Attempt) { errs = append(errs, a.RetryAfterErr) }}
			start := time.Now()
			resp, _ := NewTransport(rt, WithBackoff(time.Second, time.Second), WithJitter(JitterNone), WithHooks(h)).
				RoundTrip(newReq(t, http.MethodGet, "http://api.test/", ""))
			resp.Body.Close()
			if el := time.Since(start); el != 2*time.Second || !errors.Is(errs[0], ErrRetryAfter) {
				t.Errorf("3 attempts took %v, first Retry-After error %v; want 2s of backoff and ErrRetryAfter", el, errs[0])
			}
		})
	})
	t.Run("invalid status", func(t *testing.T) {
		for _, code := range []int{999, 600, 0, 99} {
			for _, tt := range []struct {
				method string
				want   int
			}{{http.MethodGet, 3}, {http.MethodPost, 1}} {
				rt := &silentRT{answer: func(int) (*http.Response, error) { return &http.Response{StatusCode: code}, nil }}
				var class Class
				h := Hooks{AttemptEnd: func(_ context.Context, a *Attempt) { class = a.Class }}
				resp, err := NewTransport(rt, WithBackoff(0, 0), WithHooks(h)).RoundTrip(newReq(t, tt.method, "http://api.test/", "x"))
				if err != nil || resp.StatusCode != code || rt.calls != tt.want || class != ClassServerError {
					t.Errorf("%s answered %d: %v, %v after %d attempts, class %s; want the response after %d, class server_error", tt.method, code, resp, err, rt.calls, class, tt.want)
				}
			}
		}
	})
	t.Run("empty Idempotency-Key", func(t *testing.T) {
		for _, tt := range []struct {
			key  string
			want int
		}{{"", 1}, {"  ", 1}, {"k-1", 3}} {
			rt := &silentRT{answer: func(int) (*http.Response, error) { return nil, syscall.ECONNRESET }}
			req := newReq(t, http.MethodPost, "http://api.test/", "x")
			req.Header.Set("Idempotency-Key", tt.key)
			NewTransport(rt, WithBackoff(0, 0)).RoundTrip(req)
			if rt.processed != tt.want {
				t.Errorf("POST with Idempotency-Key %q processed %d times; want %d", tt.key, rt.processed, tt.want)
			}
		}
	})
}

// refusedErr is the error of a refused dial, as net/http returns it.
func refusedErr() error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}
