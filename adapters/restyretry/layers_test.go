package restyretry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-resty/resty/v2"

	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/internal/testsupport/faultserver"
	"github.com/tankhttp/tank/middleware"
)

// hitServer counts the requests it reads and answers the n-th one with
// status(n) and the body "hit n", so a caller can tell which answer it got.
type hitServer struct {
	*httptest.Server
	n atomic.Int32
}

func newHitServer(t *testing.T, status func(n int) int) *hitServer {
	s := &hitServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n := int(s.n.Add(1))
		w.WriteHeader(status(n))
		fmt.Fprintf(w, "hit %d", n)
	}))
	t.Cleanup(s.Close)
	return s
}

// alwaysRetry returns a retry condition that asks resty's own loop to
// retry whatever happened, and counts how often resty asked it.
func alwaysRetry(asked *atomic.Int32) resty.RetryConditionFunc {
	return func(*resty.Response, error) bool {
		asked.Add(1)
		return true
	}
}

// restyWaitsLong makes every wait of resty's own loop an hour long, however
// it is computed, so a loop that runs again shows as a deadline error rather
// than as a timing.
func restyWaitsLong(c *resty.Client) {
	c.SetRetryWaitTime(time.Hour).SetRetryMaxWaitTime(time.Hour).
		SetRetryAfter(func(*resty.Client, *resty.Response) (time.Duration, error) { return time.Hour, nil })
}

// TestOneRetryLayer checks that only tank retries, whatever resty retry
// setters are called and in whatever order: the server is hit exactly as
// often as tank attempts, the caller gets tank's result (the last response
// with its body, or tank's error), and the request's context after Execute
// is the caller's own. resty's waits are an hour and the caller's deadline
// a few seconds, so a second retry layer fails the test instead of hanging
// it.
func TestOneRetryLayer(t *testing.T) {
	attempts := func(n int) middleware.Option { return middleware.WithMaxAttempts(n) }
	orders := []struct {
		name  string
		setup func(c *resty.Client, always resty.RetryConditionFunc) // Apply included
		req   func(r *resty.Request, always resty.RetryConditionFunc)
		want  int // tank's attempts on a server that never succeeds
	}{
		{"condition before Apply, count after, resty waits zero", func(c *resty.Client, always resty.RetryConditionFunc) {
			c.AddRetryCondition(always)
			restyretry.Apply(c, noWait, attempts(4))
			c.SetRetryCount(5).SetRetryWaitTime(0).SetRetryMaxWaitTime(0)
		}, nil, 4},
		{"condition before Apply, count after", func(c *resty.Client, always resty.RetryConditionFunc) {
			c.AddRetryCondition(always)
			restyretry.Apply(c, noWait, attempts(4))
			c.SetRetryCount(5)
			restyWaitsLong(c)
		}, nil, 4},
		{"count before Apply, condition after", func(c *resty.Client, always resty.RetryConditionFunc) {
			c.SetRetryCount(5)
			restyWaitsLong(c)
			restyretry.Apply(c, noWait, attempts(4))
			c.AddRetryCondition(always)
		}, nil, 4},
		{"condition and count after Apply", func(c *resty.Client, always resty.RetryConditionFunc) {
			restyretry.Apply(c, noWait, attempts(4))
			restyWaitsLong(c)
			c.AddRetryCondition(always).SetRetryCount(5)
		}, nil, 4},
		{"count after Apply, condition on the request", func(c *resty.Client, always resty.RetryConditionFunc) {
			restyretry.Apply(c, noWait, attempts(4))
			restyWaitsLong(c)
			c.SetRetryCount(5)
		}, func(r *resty.Request, always resty.RetryConditionFunc) { r.AddRetryCondition(always) }, 4},
		{"count after Apply only", func(c *resty.Client, always resty.RetryConditionFunc) {
			restyretry.Apply(c, noWait, attempts(4))
			restyWaitsLong(c)
			c.SetRetryCount(5)
		}, nil, 4},
		{"Apply twice", func(c *resty.Client, always resty.RetryConditionFunc) {
			restyretry.Apply(c, noWait, attempts(3))
			restyretry.Apply(c, noWait, attempts(3))
		}, nil, 3},
		{"Apply twice, the second with other options, condition between, count after", func(c *resty.Client, always resty.RetryConditionFunc) {
			restyretry.Apply(c, noWait, attempts(5))
			c.AddRetryCondition(always)
			restyretry.Apply(c, noWait, attempts(2))
			restyWaitsLong(c)
			c.SetRetryCount(5)
		}, nil, 2},
	}
	outcomes := []struct {
		name   string
		status func(n int) int // nil: the server resets every connection
		hits   func(want int) int
	}{
		{"503 forever", func(int) int { return 503 }, func(want int) int { return want }},
		{"503 503 200", func(n int) int {
			if n < 3 {
				return 503
			}
			return 200
		}, func(want int) int { return min(want, 3) }},
		{"reset", nil, func(want int) int { return want }},
	}
	for _, o := range orders {
		for _, out := range outcomes {
			for _, raw := range []bool{false, true} {
				name := o.name + "/" + out.name
				if raw {
					name += "/SetDoNotParseResponse"
				}
				t.Run(name, func(t *testing.T) {
					var (
						url  string
						hits func() int
					)
					if out.status != nil {
						srv := newHitServer(t, out.status)
						url, hits = srv.URL, func() int { return int(srv.n.Load()) }
					} else {
						srv := faultserver.NewResetWhen(func(int) bool { return true })
						t.Cleanup(srv.Close)
						url, hits = srv.URL, srv.Hits
					}
					c := newClient(t).SetLogger(bufLogger{io.Discard}).SetDoNotParseResponse(raw)
					var asked, hooked atomic.Int32
					always := alwaysRetry(&asked)
					c.AddRetryHook(func(*resty.Response, error) { hooked.Add(1) })
					o.setup(c, always)

					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					r := c.R().SetContext(ctx)
					if o.req != nil {
						o.req(r, always)
					}
					resp, err := r.Get(url)
					want := out.hits(o.want)

					if got := hits(); got != want {
						t.Errorf("server hit %d times; want %d, tank's attempts", got, want)
					}
					if n, m := asked.Load(), hooked.Load(); n != 0 || m != 0 {
						t.Errorf("resty asked its retry condition %d times and ran its retry hooks %d times; want 0 and 0", n, m)
					}
					if resp == nil {
						t.Fatalf("resp = nil, err = %v", err)
					}
					if resp.Request.Context() != ctx {
						t.Errorf("resp.Request.Context() = %v; want the caller's context", resp.Request.Context())
					}
					if ctx.Err() != nil {
						t.Errorf("the caller's context ended (%v): resty waited", ctx.Err())
					}
					if out.status == nil {
						var ex *middleware.ExhaustedError
						if !errors.As(err, &ex) || ex.Attempts != want {
							t.Errorf("err = %v; want tank's *ExhaustedError after %d attempts", err, want)
						}
						return
					}
					if err != nil {
						t.Fatalf("err = %v; want tank's last response", err)
					}
					var body string
					if raw {
						b, rerr := io.ReadAll(resp.RawBody())
						resp.RawBody().Close()
						if rerr != nil {
							t.Errorf("reading the body left to the caller: %v", rerr)
						}
						body = string(b)
					} else {
						body = resp.String()
					}
					if wantBody := fmt.Sprintf("hit %d", want); body != wantBody || resp.StatusCode() != out.status(want) {
						t.Errorf("got %d %q; want %d %q, the last response", resp.StatusCode(), body, out.status(want), wantBody)
					}
				})
			}
		}
	}
}

// TestApplyTwiceWrapsTheOriginal checks that a second Apply replaces the
// first one's options and wraps the transport the first one found, once,
// and that it registers nothing again: the retry condition Apply adds (the
// one piece resty lets a caller see) is there once.
func TestApplyTwiceWrapsTheOriginal(t *testing.T) {
	srv := newHitServer(t, func(int) int { return 503 })
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	rt := &countRT{next: tr}
	c := resty.New().SetTransport(rt)
	restyretry.Apply(c, noWait, middleware.WithMaxAttempts(5))
	restyretry.Apply(c, noWait, middleware.WithMaxAttempts(2))
	restyretry.Apply(c, noWait, middleware.WithMaxAttempts(3))
	resp, err := c.R().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.n.Load(); got != 3 || rt.n.Load() != 3 || resp.String() != "hit 3" {
		t.Errorf("server hit %d times, user transport %d, body %q; want 3, 3, \"hit 3\" (the last Apply's options)", got, rt.n.Load(), resp.String())
	}
	if n := len(c.RetryConditions); n != 1 {
		t.Errorf("%d retry conditions after three Applys; want 1", n)
	}

	// After SetTransport, Apply wraps the new transport, and still
	// registers nothing again.
	rt2 := &countRT{next: tr}
	restyretry.Apply(c.SetTransport(rt2), noWait, middleware.WithMaxAttempts(2))
	c.SetRetryCount(5).AddRetryCondition(func(*resty.Response, error) bool { return true })
	if _, err := c.R().Get(srv.URL); err != nil {
		t.Fatal(err)
	}
	if rt2.n.Load() != 2 || rt.n.Load() != 3 {
		t.Errorf("new transport saw %d attempts, the old one %d more; want 2 and 0", rt2.n.Load(), rt.n.Load()-3)
	}
	if n := len(c.RetryConditions); n != 2 {
		t.Errorf("%d retry conditions; want 2, Apply's and the caller's", n)
	}
}

// TestClone checks resty's Clone both ways: a clone made after Apply has
// its middleware and hooks, and Apply on a clone made before (which shares
// the *http.Client, so tank's transport) registers them on the clone.
func TestClone(t *testing.T) {
	srv := newHitServer(t, func(int) int { return 503 })
	c := newClient(t)
	before := c.Clone()
	restyretry.Apply(c, noWait, middleware.WithMaxAttempts(2))
	after := c.Clone()
	restyretry.Apply(before, noWait, middleware.WithMaxAttempts(3))
	var asked atomic.Int32
	for _, tt := range []struct {
		name string
		c    *resty.Client
		want int32 // the last Apply's attempts: the clients share one *http.Client
	}{{"after", after, 3}, {"before", before, 3}, {"original", c, 3}} {
		t.Run(tt.name, func(t *testing.T) {
			srv.n.Store(0)
			asked.Store(0)
			tt.c.SetRetryCount(5).AddRetryCondition(alwaysRetry(&asked))
			if _, err := tt.c.R().Get(srv.URL); err != nil {
				t.Fatal(err)
			}
			if got := srv.n.Load(); got != tt.want || asked.Load() != 0 {
				t.Errorf("server hit %d times, resty asked its condition %d times; want %d and 0", got, asked.Load(), tt.want)
			}
		})
	}
}

// TestHooksSeeTheCallerContext checks what user code sees with resty's
// loop on: OnSuccess and OnError hooks registered after Apply, and the
// caller after Execute, see the request's own context, not the canceled
// one that stops resty's loop.
func TestHooksSeeTheCallerContext(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status func(int) int
	}{{"success", func(int) int { return 503 }}, {"error", nil}} {
		t.Run(tt.name, func(t *testing.T) {
			url := ""
			if tt.status != nil {
				url = newHitServer(t, tt.status).URL
			} else {
				srv := faultserver.NewResetWhen(func(int) bool { return true })
				t.Cleanup(srv.Close)
				url = srv.URL
			}
			var seen []context.Context
			c := restyretry.Apply(newClient(t).SetLogger(bufLogger{io.Discard}), noWait, middleware.WithMaxAttempts(2)).
				SetRetryCount(3).AddRetryCondition(func(*resty.Response, error) bool { return true })
			c.OnSuccess(func(_ *resty.Client, resp *resty.Response) { seen = append(seen, resp.Request.Context()) })
			c.OnError(func(r *resty.Request, _ error) { seen = append(seen, r.Context()) })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, _ := c.R().SetContext(ctx).Get(url)
			if len(seen) != 1 || seen[0] != ctx {
				t.Errorf("hooks saw %v; want the caller's context once", seen)
			}
			if resp.Request.Context() != ctx {
				t.Errorf("after Execute: %v; want the caller's context", resp.Request.Context())
			}
			// The same request executed again: armed anew, one layer.
			resp, _ = resp.Request.Get(url)
			if len(seen) != 2 || resp.Request.Context() != ctx {
				t.Errorf("second Execute: hooks ran %d times, context %v; want 2 and the caller's", len(seen), resp.Request.Context())
			}
		})
	}
}

// TestRequestFromMiddleware checks that a request sent from a middleware
// with the outer request's context, through another client upgraded by
// Apply, neither stops the outer request's loop early (which would cancel
// it) nor is counted as the outer request's answer.
func TestRequestFromMiddleware(t *testing.T) {
	srv := newHitServer(t, func(int) int { return 503 })
	token := newHitServer(t, func(int) int { return 200 })
	auth := restyretry.Apply(newClient(t), noWait)
	var asked atomic.Int32
	c := restyretry.Apply(newClient(t), noWait, middleware.WithMaxAttempts(3)).
		SetRetryCount(5).AddRetryCondition(alwaysRetry(&asked))
	restyWaitsLong(c)
	c.OnBeforeRequest(func(_ *resty.Client, r *resty.Request) error {
		resp, err := auth.R().SetContext(r.Context()).Get(token.URL)
		if err != nil {
			return err
		}
		r.SetHeader("Authorization", resp.String())
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.R().SetContext(ctx).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if srv.n.Load() != 3 || resp.String() != "hit 3" || asked.Load() != 0 {
		t.Errorf("server hit %d times, body %q, condition asked %d times; want 3, \"hit 3\", 0", srv.n.Load(), resp.String(), asked.Load())
	}
}

// TestEnableTrace checks one retry layer with resty's EnableTrace, which
// derives the request's context from the armed one.
func TestEnableTrace(t *testing.T) {
	srv := newHitServer(t, func(int) int { return 503 })
	var asked atomic.Int32
	c := restyretry.Apply(newClient(t), noWait, middleware.WithMaxAttempts(3)).
		SetRetryCount(5).AddRetryCondition(alwaysRetry(&asked)).EnableTrace()
	restyWaitsLong(c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.R().SetContext(ctx).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if srv.n.Load() != 3 || asked.Load() != 0 || resp.Request.Context().Err() != nil {
		t.Errorf("server hit %d times, condition asked %d times, context error %v; want 3, 0, nil",
			srv.n.Load(), asked.Load(), resp.Request.Context().Err())
	}
	if resp.Request.TraceInfo().TotalTime <= 0 {
		t.Errorf("trace info %+v; want a total time", resp.Request.TraceInfo())
	}
}

// TestConcurrentRequests runs requests on one client at once with resty's
// loop on: each request's loop state is its own (run it with -race).
func TestConcurrentRequests(t *testing.T) {
	srv := newHitServer(t, func(int) int { return 503 })
	var asked atomic.Int32
	c := restyretry.Apply(newClient(t), noWait, middleware.WithMaxAttempts(3)).
		SetRetryCount(5).AddRetryCondition(alwaysRetry(&asked))
	restyWaitsLong(c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := c.R().SetContext(ctx).Get(srv.URL)
			if err != nil || resp.StatusCode() != 503 || resp.Request.Context() != ctx {
				t.Errorf("got %v, %v; want tank's last 503 and the caller's context", resp, err)
			}
		})
	}
	wg.Wait()
	if got := srv.n.Load(); got != n*3 || asked.Load() != 0 {
		t.Errorf("server hit %d times, condition asked %d times; want %d and 0", got, asked.Load(), n*3)
	}
}

// TestDigestAuthOrder pins down the resty v2 behaviour doc.go describes:
// SetDigestAuth keeps the transport it found and puts it back around every
// request, so before Apply it drops tank, and after Apply it keeps it.
func TestDigestAuthOrder(t *testing.T) {
	for _, tt := range []struct {
		name   string
		before bool
		want   int32
	}{{"before Apply", true, 1}, {"after Apply", false, 3}} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newHitServer(t, func(int) int { return 503 })
			c := newClient(t)
			if tt.before {
				c.SetDigestAuth("user", "pass")
			}
			restyretry.Apply(c, noWait, middleware.WithMaxAttempts(3))
			if !tt.before {
				c.SetDigestAuth("user", "pass")
			}
			if _, err := c.R().Get(srv.URL); err != nil {
				t.Fatal(err)
			}
			if got := srv.n.Load(); got != tt.want {
				t.Errorf("server hit %d times; want %d", got, tt.want)
			}
		})
	}
}
