package restyretry_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/go-resty/resty/v2"

	"github.com/tankhttp/tank/adapters/restyretry"
	"github.com/tankhttp/tank/internal/testsupport/faultserver"
	"github.com/tankhttp/tank/middleware"
)

// restyLoopOn turns resty's own retry loop on after Apply, with a condition
// that always asks for a retry and waits of an hour: Apply must keep it from
// adding attempts (TestOneRetryLayer), and the count must not change.
func restyLoopOn(c *resty.Client) {
	c.SetLogger(bufLogger{io.Discard}).SetRetryCount(5).
		AddRetryCondition(func(*resty.Response, error) bool { return true })
	restyWaitsLong(c)
}

// TestAttemptIsTanks checks that resty's Request.Attempt reports tank's
// attempts once Execute returns, and already in resty's response
// middlewares and hooks, with resty's own loop off (Apply's default) or
// on; and that the caller gets its own context back.
func TestAttemptIsTanks(t *testing.T) {
	for _, loop := range []bool{false, true} {
		for _, tt := range []struct {
			name  string
			codes []int // nil: the server resets every connection
			want  int
		}{
			{"503 503 200", []int{503, 503, 200}, 3},
			{"first try", []int{200}, 1},
			{"503 until the cap", []int{503}, 4},
			{"404 is final", []int{404}, 1},
			{"reset until the cap", nil, 4},
		} {
			name := tt.name
			if loop {
				name += "/resty loop on"
			}
			t.Run(name, func(t *testing.T) {
				var (
					url  string
					hits func() int
				)
				if tt.codes != nil {
					srv := newStatusServer(t, tt.codes...)
					url, hits = srv.URL, srv.hits
				} else {
					srv := faultserver.NewResetWhen(func(int) bool { return true })
					t.Cleanup(srv.Close)
					url, hits = srv.URL, srv.Hits
				}
				c := restyretry.Apply(newClient(t), noWait, middleware.WithMaxAttempts(4))
				if loop {
					restyLoopOn(c)
				}
				var seen []int
				c.OnAfterResponse(func(_ *resty.Client, resp *resty.Response) error {
					seen = append(seen, resp.Request.Attempt)
					return nil
				})
				c.OnSuccess(func(_ *resty.Client, resp *resty.Response) { seen = append(seen, resp.Request.Attempt) })
				c.OnError(func(r *resty.Request, _ error) { seen = append(seen, r.Attempt) })

				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				r := c.R().SetContext(ctx)
				_, err := r.Get(url)
				if (err != nil) != (tt.codes == nil) {
					t.Fatalf("err = %v", err)
				}
				if r.Attempt != tt.want || hits() != tt.want {
					t.Errorf("Request.Attempt = %d after %d server hits; want %d and %d", r.Attempt, hits(), tt.want, tt.want)
				}
				for _, n := range seen {
					if n != tt.want {
						t.Errorf("resty's middlewares and hooks saw Attempt %v; want %d", seen, tt.want)
						break
					}
				}
				if r.Context() != ctx {
					t.Errorf("after Execute: %v; want the caller's context", r.Context())
				}
			})
		}
	}
}

// TestAttemptInTraceInfo checks resty's TraceInfo, which derives the
// request's context from the counted one and reports Attempt.
func TestAttemptInTraceInfo(t *testing.T) {
	for _, loop := range []bool{false, true} {
		srv := newStatusServer(t, 503, 503, 200)
		c := restyretry.Apply(newClient(t), noWait)
		if loop {
			restyLoopOn(c)
		}
		resp, err := c.R().EnableTrace().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Request.TraceInfo().RequestAttempt; got != 3 || resp.Request.Attempt != 3 {
			t.Errorf("loop %v: TraceInfo().RequestAttempt = %d, Attempt %d; want 3", loop, got, resp.Request.Attempt)
		}
	}
}

// TestAttemptCallersOutcome checks that an Outcome the caller put in the
// request's context is the one tank fills in, and that Attempt agrees.
func TestAttemptCallersOutcome(t *testing.T) {
	for _, loop := range []bool{false, true} {
		srv := newStatusServer(t, 503, 503, 200)
		c := restyretry.Apply(newClient(t), noWait)
		if loop {
			restyLoopOn(c)
		}
		var out middleware.Outcome
		ctx := middleware.WithOutcome(context.Background(), &out)
		resp, err := c.R().SetContext(ctx).Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		want := middleware.Outcome{Attempts: 3, Reason: middleware.ReasonFinal}
		if out != want || resp.Request.Attempt != 3 {
			t.Errorf("loop %v: caller's Outcome %+v, Attempt %d; want %+v and 3", loop, out, resp.Request.Attempt, want)
		}
		if resp.Request.Context() != ctx {
			t.Errorf("loop %v: after Execute: %v; want the caller's context", loop, resp.Request.Context())
		}
	}
}

// TestAttemptRequestExecutedTwice checks that a resty Request executed a
// second time is counted anew.
func TestAttemptRequestExecutedTwice(t *testing.T) {
	srv := newStatusServer(t, 503, 503, 200) // 200 from then on
	c := restyretry.Apply(newClient(t), noWait)
	r := c.R()
	if _, err := r.Get(srv.URL); err != nil || r.Attempt != 3 {
		t.Fatalf("first Execute: Attempt %d, err %v; want 3, nil", r.Attempt, err)
	}
	if _, err := r.Get(srv.URL); err != nil || r.Attempt != 1 {
		t.Errorf("second Execute: Attempt %d, err %v; want 1, nil", r.Attempt, err)
	}
}

// TestAttemptNestedRequest checks that a request sent from a response
// middleware with the outer request's context, through another client
// upgraded by Apply, is counted on its own and leaves the outer count as
// it was.
func TestAttemptNestedRequest(t *testing.T) {
	srv := newStatusServer(t, 503, 503, 200)
	audit := newStatusServer(t, 503, 200)
	auditor := restyretry.Apply(newClient(t), noWait)
	c := restyretry.Apply(newClient(t), noWait)
	var inner int
	c.OnAfterResponse(func(_ *resty.Client, resp *resty.Response) error {
		r, err := auditor.R().SetContext(resp.Request.Context()).Get(audit.URL)
		if err != nil {
			return err
		}
		inner = r.Request.Attempt
		return nil
	})
	resp, err := c.R().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Request.Attempt != 3 || inner != 2 {
		t.Errorf("outer Attempt %d, inner %d; want 3 and 2", resp.Request.Attempt, inner)
	}
}

// TestRequestOptionsThroughResty checks middleware.WithRequestOptions
// through R().SetContext: the request's own options override Apply's, up
// as well as down, and an invalid one fails the request before anything is
// sent (Attempt then stays resty's own 1).
func TestRequestOptionsThroughResty(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []middleware.Option
		want int // server hits, all 503
	}{
		{"Apply's", nil, 3},
		{"no retries", []middleware.Option{middleware.WithMaxAttempts(1)}, 1},
		{"more than Apply's", []middleware.Option{middleware.WithMaxAttempts(5)}, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newStatusServer(t, 503)
			c := restyretry.Apply(newClient(t), noWait, middleware.WithMaxAttempts(3))
			ctx := middleware.WithRequestOptions(context.Background(), tt.opts...)
			resp, err := c.R().SetContext(ctx).Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != 503 || srv.hits() != tt.want || resp.Request.Attempt != tt.want {
				t.Errorf("status %d after %d hits, Attempt %d; want 503 after %d", resp.StatusCode(), srv.hits(), resp.Request.Attempt, tt.want)
			}
			// The next request without options is back to Apply's.
			resp, err = c.R().Get(srv.URL)
			if err != nil || resp.Request.Attempt != 3 {
				t.Errorf("next request: Attempt %d, err %v; want Apply's 3", resp.Request.Attempt, err)
			}
		})
	}
	t.Run("invalid", func(t *testing.T) {
		srv := newStatusServer(t, 503)
		c := restyretry.Apply(newClient(t), noWait)
		out := middleware.Outcome{Attempts: 7}
		ctx := middleware.WithRequestOptions(middleware.WithOutcome(context.Background(), &out), middleware.WithMaxAttempts(0))
		resp, err := c.R().SetContext(ctx).Get(srv.URL)
		var oe *middleware.OptionError
		if !errors.As(err, &oe) || oe.Option != "WithMaxAttempts" {
			t.Errorf("err = %v; want the *middleware.OptionError of WithMaxAttempts", err)
		}
		if srv.hits() != 0 {
			t.Errorf("server hit %d times; want 0", srv.hits())
		}
		if resp == nil || resp.Request.Attempt != 1 || out.Attempts != 7 {
			t.Errorf("resp %v, Outcome %+v; want resty's Attempt 1 and the Outcome untouched", resp, out)
		}
	})
}

// TestOutcomeThroughResty checks middleware.WithOutcome through
// R().SetContext, for a success after retries, a first-try success and a
// give-up on a response.
func TestOutcomeThroughResty(t *testing.T) {
	for _, tt := range []struct {
		name  string
		codes []int
		want  middleware.Outcome
	}{
		{"503 503 200", []int{503, 503, 200}, middleware.Outcome{Attempts: 3, Reason: middleware.ReasonFinal}},
		{"first try", []int{200}, middleware.Outcome{Attempts: 1, Reason: middleware.ReasonFinal}},
		{"503 forever", []int{503}, middleware.Outcome{Attempts: 3, Reason: middleware.ReasonAttempts}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newStatusServer(t, tt.codes...)
			c := restyretry.Apply(newClient(t), noWait)
			var out middleware.Outcome
			resp, err := c.R().SetContext(middleware.WithOutcome(context.Background(), &out)).Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			if out != tt.want || resp.Request.Attempt != tt.want.Attempts {
				t.Errorf("Outcome %+v, Attempt %d; want %+v", out, resp.Request.Attempt, tt.want)
			}
		})
	}
}
