package backoffretry_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tankhttp/tank/adapters/backoffretry"
	"github.com/tankhttp/tank/internal/testsupport/faultserver"
	"github.com/tankhttp/tank/middleware"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// noWait makes tank's waits 0, for tests that count rather than time.
var noWait = middleware.WithBackoff(0, 0)

// do sends req the way the package doc shows.
func do(req *http.Request, next http.RoundTripper, opts ...middleware.Option) (*http.Response, error) {
	op, b := backoffretry.New(req, next, opts...)
	return backoff.RetryWithData(op, backoff.WithContext(b, req.Context()))
}

// newTransport returns an *http.Transport closed when the test ends.
func newTransport(t *testing.T) *http.Transport {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func newRequest(t *testing.T, method, url, body string) *http.Request {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func readBody(t *testing.T, resp *http.Response) string {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// codeServer answers the n-th request with codes[n-1] (the last repeats).
func codeServer(t *testing.T, codes ...int) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n := int(hits.Add(1))
		code := codes[min(n, len(codes))-1]
		w.WriteHeader(code)
		io.WriteString(w, http.StatusText(code))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestGETThrough503s(t *testing.T) {
	srv, hits := codeServer(t, 503, 503, 200)
	resp, err := do(newRequest(t, "GET", srv.URL, ""), newTransport(t), noWait)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != 200 || body != "OK" || hits.Load() != 3 {
		t.Errorf("got %d %q after %d hits; want 200 \"OK\" after 3", resp.StatusCode, body, hits.Load())
	}
}

func TestProcessedPOSTIsSentOnce(t *testing.T) {
	srv := faultserver.NewRaw(faultserver.ReadRST)
	t.Cleanup(srv.Close)
	_, err := do(newRequest(t, "POST", srv.URL, "order"), newTransport(t), noWait)
	if got := srv.Hits(); got != 1 {
		t.Errorf("server processed the POST %d times; want 1", got)
	}
	var ex *middleware.ExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 1 || ex.Reason != middleware.ReasonNotReplayable {
		t.Errorf("err = %v; want an *ExhaustedError after 1 attempt (%s)", err, middleware.ReasonNotReplayable)
	}
}

func TestPOSTWithIdempotencyKeyIsRetried(t *testing.T) {
	srv := faultserver.NewResetWhen(func(n int) bool { return n == 1 })
	t.Cleanup(srv.Close)
	req := newRequest(t, "POST", srv.URL, "payment")
	req.Header.Set("Idempotency-Key", "k1")
	resp, err := do(req, newTransport(t), noWait)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); body != "ok" || srv.Hits() != 2 {
		t.Errorf("got %q after %d requests; want \"ok\" after 2", body, srv.Hits())
	}
}

func TestUntrustedCertificateStops(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake fails on purpose
	srv.StartTLS()
	t.Cleanup(srv.Close)

	_, err := do(newRequest(t, "GET", srv.URL, ""), newTransport(t), noWait)
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) || !errors.Is(err, middleware.ReasonPermanent) {
		t.Errorf("err = %v; want a *tls.CertificateVerificationError and %s", err, middleware.ReasonPermanent)
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("server saw %d connections; want 1", got)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	for _, tt := range []struct {
		name  string
		value func() string
		want  time.Duration
	}{
		{"seconds", func() string { return "2" }, 2 * time.Second},
		{"http-date", func() string { return time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat) }, 3 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &faultserver.FakeTransport{Answer: func(n int) (*http.Response, error) {
					if n == 1 {
						return faultserver.Response(503, "Retry-After", tt.value()), nil
					}
					return faultserver.Response(200), nil
				}}
				req := newRequest(t, "GET", "http://tank.test/", "")
				op, b := backoffretry.New(req, f)
				var notified []time.Duration
				start := time.Now()
				resp, err := backoff.RetryNotifyWithData(op, backoff.WithContext(b, req.Context()), func(err error, d time.Duration) {
					if !errors.Is(err, middleware.ReasonNotProcessed) {
						t.Errorf("notified err = %v; want %s", err, middleware.ReasonNotProcessed)
					}
					notified = append(notified, d)
				})
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if diff := cmp.Diff([]time.Duration{tt.want}, notified); diff != "" {
					t.Errorf("waits notified (-want +got):\n%s", diff)
				}
				if got := time.Since(start); resp.StatusCode != 200 || got != tt.want {
					t.Errorf("status %d after %v; want 200 after %v", resp.StatusCode, got, tt.want)
				}
				if got := f.Closed(); got != 2 {
					t.Errorf("%d response bodies closed; want 2", got)
				}
			})
		})
	}
}

func TestRetryAfterBeyondDeadlineReturnsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &faultserver.FakeTransport{Answer: func(int) (*http.Response, error) { return faultserver.Response(503, "Retry-After", "5"), nil }}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req := newRequest(t, "GET", "http://tank.test/", "").WithContext(ctx)
		start := time.Now()
		resp, err := do(req, f)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || f.Attempts() != 1 || time.Since(start) != 0 {
			t.Errorf("status %d after %d attempts and %v; want 503 after 1, at once", resp.StatusCode, f.Attempts(), time.Since(start))
		}
	})
}

var errBroken = errors.New("broken pipe (fake)")

// TestGiveUpError checks what a caller of backoff.RetryWithData gets when
// retries end on a transport error: the *middleware.ExhaustedError, never
// backoff's Permanent wrapper, reaching both the last error and the reason.
func TestGiveUpError(t *testing.T) {
	f := &faultserver.FakeTransport{Answer: func(int) (*http.Response, error) { return nil, errBroken }}
	resp, err := do(newRequest(t, "PUT", "http://tank.test/", "doc"), f, noWait)
	if resp != nil {
		t.Errorf("resp = %v; want nil", resp)
	}
	var ex *middleware.ExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 3 {
		t.Fatalf("err = %v; want an *ExhaustedError after 3 attempts", err)
	}
	if !errors.Is(err, errBroken) || !errors.Is(err, middleware.ReasonAttempts) {
		t.Errorf("err = %v; want errors.Is to reach %v and %s", err, errBroken, middleware.ReasonAttempts)
	}
	var perm *backoff.PermanentError
	if errors.As(err, &perm) {
		t.Errorf("err = %#v; backoff's Permanent wrapper reached the caller", err)
	}
}

// TestRetryErrorOfCutLoop checks the error a caller gets when a BackOff
// wrapper ends the loop while tank still wanted a retry: it names the
// attempt and unwraps to its error and the reason for the retry.
func TestRetryErrorOfCutLoop(t *testing.T) {
	f := &faultserver.FakeTransport{Answer: func(int) (*http.Response, error) { return nil, errBroken }}
	op, b := backoffretry.New(newRequest(t, "GET", "http://tank.test/", ""), f, noWait)
	_, err := backoff.RetryWithData(op, backoff.WithMaxRetries(b, 1))
	if !errors.Is(err, errBroken) || !errors.Is(err, middleware.ReasonReplayable) || !strings.Contains(err.Error(), "attempt 2 will be retried") {
		t.Errorf("err = %v; want attempt 2's retry error, reaching %v and %s", err, errBroken, middleware.ReasonReplayable)
	}
	if f.Attempts() != 2 {
		t.Errorf("%d attempts; want 2", f.Attempts())
	}
}

// TestCancelDuringSleep pins down backoff v4's behaviour that doc.go
// describes: a cancellation during backoff's sleep returns the bare context
// error. The request still ends properly: the body prepared for the next
// attempt is closed, Hooks.RequestEnd fires once with ReasonCanceled, and a
// later call of the operation returns the *middleware.ExhaustedError.
func TestCancelDuringSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &faultserver.FakeTransport{Answer: func(int) (*http.Response, error) { return faultserver.Response(503), nil }}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel)
		var bodies []*closeCounter
		req := newRequest(t, "PUT", "http://tank.test/", "").WithContext(ctx)
		req.GetBody = func() (io.ReadCloser, error) {
			b := &closeCounter{Reader: strings.NewReader("doc")}
			bodies = append(bodies, b)
			return b, nil
		}
		req.Body, _ = req.GetBody()
		var ends []middleware.Reason
		hooks := middleware.WithHooks(middleware.Hooks{RequestEnd: func(_ context.Context, last *middleware.Attempt) {
			ends = append(ends, last.Reason)
		}})
		op, b := backoffretry.New(req, f, hooks,
			middleware.WithBackoff(10*time.Second, 10*time.Second), middleware.WithJitter(middleware.JitterNone))
		start := time.Now()
		_, err := backoff.RetryWithData(op, backoff.WithContext(b, ctx))
		if err != context.Canceled {
			t.Errorf("err = %v; want the bare context.Canceled", err)
		}
		if got := time.Since(start); got != time.Second || f.Attempts() != 1 || f.Closed() != 1 {
			t.Errorf("returned after %v, %d attempts, %d response bodies closed; want 1s, 1, 1", got, f.Attempts(), f.Closed())
		}
		synctest.Wait() // for the context's AfterFunc
		if diff := cmp.Diff([]middleware.Reason{middleware.ReasonCanceled}, ends); diff != "" {
			t.Errorf("RequestEnd reasons (-want +got):\n%s", diff)
		}
		if len(bodies) != 2 || bodies[0].n != 1 || bodies[1].n != 1 {
			t.Errorf("%d request bodies; want 2, each closed once", len(bodies))
		}
		_, err = op()
		var ex *middleware.ExhaustedError
		if !errors.As(err, &ex) || ex.Reason != middleware.ReasonCanceled || !errors.Is(err, context.Canceled) {
			t.Errorf("op() after the cancel: err = %v; want an *ExhaustedError (%s, context.Canceled)", err, middleware.ReasonCanceled)
		}
	})
}

// closeCounter is a request body that counts its Close calls.
type closeCounter struct {
	io.Reader
	n int
}

func (c *closeCounter) Close() error { c.n++; return nil }

func TestInvalidOption(t *testing.T) {
	f := &faultserver.FakeTransport{Answer: func(int) (*http.Response, error) { return faultserver.Response(200), nil }}
	body := &closeCounter{Reader: strings.NewReader("x")}
	req := newRequest(t, "POST", "http://tank.test/", "")
	req.Body = body
	_, err := do(req, f, middleware.WithMaxAttempts(0))
	var oe *middleware.OptionError
	if !errors.As(err, &oe) || oe.Option != "WithMaxAttempts" {
		t.Errorf("err = %v; want *middleware.OptionError for WithMaxAttempts", err)
	}
	var perm *backoff.PermanentError
	if errors.As(err, &perm) {
		t.Errorf("err = %#v; backoff's Permanent wrapper reached the caller", err)
	}
	if body.n != 1 || f.Attempts() != 0 {
		t.Errorf("body closed %d times, %d attempts; want 1, 0", body.n, f.Attempts())
	}
}

// TestScheduleStop checks that backoff.Stop from the BackOff ends tank's
// retries, and that the BackOff's waits are used.
func TestScheduleStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &faultserver.FakeTransport{Answer: func(int) (*http.Response, error) { return nil, errBroken }}
		tr := middleware.NewTransport(f, middleware.WithMaxAttempts(10), backoffretry.Schedule(func() backoff.BackOff {
			return backoff.WithMaxRetries(backoff.NewConstantBackOff(time.Second), 2)
		}))
		start := time.Now()
		_, err := tr.RoundTrip(newRequest(t, "GET", "http://tank.test/", ""))
		if !errors.Is(err, errBroken) || !errors.Is(err, middleware.ReasonAttempts) {
			t.Errorf("err = %v; want %v and %s", err, errBroken, middleware.ReasonAttempts)
		}
		if got := time.Since(start); f.Attempts() != 3 || got != 2*time.Second {
			t.Errorf("%d attempts in %v; want 3 in 2s", f.Attempts(), got)
		}
	})
}

// TestScheduleConcurrent runs many requests at once through one Transport
// whose schedule is a stateful ExponentialBackOff. Every request must see a
// fresh BackOff: its waits are the first intervals of the schedule (a
// shared one would hand out ever longer waits), and -race reports a shared
// one outright.
func TestScheduleConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const requests = 50
		var built atomic.Int32
		var mu sync.Mutex
		times := map[string][]time.Time{}
		rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			id := req.Header.Get("X-Request")
			mu.Lock()
			times[id] = append(times[id], time.Now())
			n := len(times[id])
			mu.Unlock()
			resp := faultserver.Response(200)
			if n < 3 {
				resp = faultserver.Response(503)
			}
			resp.Body = io.NopCloser(strings.NewReader(""))
			return resp, nil
		})
		tr := middleware.NewTransport(rt, backoffretry.Schedule(func() backoff.BackOff {
			built.Add(1)
			b := backoff.NewExponentialBackOff()
			b.RandomizationFactor = 0 // waits 500ms, 750ms, ...
			return b
		}))
		var wg sync.WaitGroup
		for i := range requests {
			wg.Go(func() {
				req := newRequest(t, "GET", "http://tank.test/", "")
				req.Header.Set("X-Request", strconv.Itoa(i))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			})
		}
		wg.Wait()
		if got := built.Load(); got != requests {
			t.Errorf("%d BackOffs built; want one per request, %d", got, requests)
		}
		want := []time.Duration{500 * time.Millisecond, 750 * time.Millisecond}
		for id, ts := range times {
			var waits []time.Duration
			for i := 1; i < len(ts); i++ {
				waits = append(waits, ts[i].Sub(ts[i-1]))
			}
			if diff := cmp.Diff(want, waits); diff != "" {
				t.Errorf("request %s: waits (-want +got):\n%s", id, diff)
			}
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestCancelDuringSleepRefundsBudget: the budget token drawn for a retry
// that backoff's cut sleep never made is given back, so the next request
// to the host may retry.
func TestCancelDuringSleepRefundsBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &faultserver.FakeTransport{Answer: func(int) (*http.Response, error) { return faultserver.Response(503), nil }}
		budget, _ := middleware.NewBudget(0, 0, nil) // one token in all
		opts := []middleware.Option{middleware.WithBudget(budget), middleware.WithBackoff(10*time.Second, 10*time.Second), middleware.WithJitter(middleware.JitterNone)}

		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel)
		req := newRequest(t, "GET", "http://tank.test/", "").WithContext(ctx)
		op, b := backoffretry.New(req, f, opts...)
		if _, err := backoff.RetryWithData(op, backoff.WithContext(b, ctx)); err != context.Canceled {
			t.Fatalf("err = %v; want context.Canceled", err)
		}
		synctest.Wait() // for the context's AfterFunc

		before := f.Attempts()
		req = newRequest(t, "GET", "http://tank.test/", "")
		resp, err := do(req, f, append(opts, middleware.WithMaxAttempts(2), middleware.WithBackoff(0, 0))...)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if n := f.Attempts() - before; n != 2 {
			t.Errorf("next request made %d attempts; want 2 (the refunded token pays for its retry)", n)
		}
	})
}
