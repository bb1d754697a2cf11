package backoffretry_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tankhttp/tank/internal/testsupport/faultserver"
	"github.com/tankhttp/tank/middleware"
)

// TestRequestOptionsThroughNew checks middleware.WithRequestOptions through
// the request's context: the request's own options override New's, up as
// well as down.
func TestRequestOptionsThroughNew(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []middleware.Option
		want int32 // server hits, all 503
	}{
		{"New's", nil, 3},
		{"no retries", []middleware.Option{middleware.WithMaxAttempts(1)}, 1},
		{"more than New's", []middleware.Option{middleware.WithMaxAttempts(5)}, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, hits := codeServer(t, 503)
			ctx := middleware.WithRequestOptions(context.Background(), tt.opts...)
			req := newRequest(t, http.MethodGet, srv.URL, "").WithContext(ctx)
			resp, err := do(req, newTransport(t), noWait, middleware.WithMaxAttempts(3))
			if err != nil {
				t.Fatal(err)
			}
			if got := readBody(t, resp); resp.StatusCode != 503 || got != "Service Unavailable" || hits.Load() != tt.want {
				t.Errorf("got %d %q after %d hits; want the last 503 after %d", resp.StatusCode, got, hits.Load(), tt.want)
			}
		})
	}
}

// TestRequestOptionsInvalidThroughNew checks that an invalid per-request
// option fails the request with the *middleware.OptionError before
// anything is sent, and closes the body.
func TestRequestOptionsInvalidThroughNew(t *testing.T) {
	srv, hits := codeServer(t, 200)
	ctx := middleware.WithRequestOptions(context.Background(), middleware.WithMaxAttempts(0))
	body := &closeCounter{Reader: strings.NewReader("order")}
	req := newRequest(t, http.MethodPost, srv.URL, "").WithContext(ctx)
	req.Body = body
	resp, err := do(req, newTransport(t), noWait)
	var oe *middleware.OptionError
	if resp != nil || !errors.As(err, &oe) || oe.Option != "WithMaxAttempts" {
		t.Errorf("got %v, %v; want the *middleware.OptionError of WithMaxAttempts", resp, err)
	}
	if hits.Load() != 0 || body.n != 1 {
		t.Errorf("server hit %d times, body closed %d times; want 0 and 1", hits.Load(), body.n)
	}
}

// TestOutcomeThroughNew checks middleware.WithOutcome through the request's
// context, for a success after retries, a first-try success, a give-up on
// a response and one on a transport error.
func TestOutcomeThroughNew(t *testing.T) {
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
			srv, _ := codeServer(t, tt.codes...)
			var out middleware.Outcome
			req := newRequest(t, http.MethodGet, srv.URL, "").WithContext(middleware.WithOutcome(context.Background(), &out))
			resp, err := do(req, newTransport(t), noWait)
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			if out != tt.want {
				t.Errorf("Outcome %+v; want %+v", out, tt.want)
			}
		})
	}
	t.Run("reset", func(t *testing.T) {
		srv := faultserver.NewResetWhen(func(int) bool { return true })
		t.Cleanup(srv.Close)
		var out middleware.Outcome
		req := newRequest(t, http.MethodGet, srv.URL, "").WithContext(middleware.WithOutcome(context.Background(), &out))
		_, err := do(req, newTransport(t), noWait)
		var ex *middleware.ExhaustedError
		if !errors.As(err, &ex) || ex.Attempts != 3 {
			t.Fatalf("err = %v; want an *ExhaustedError after 3 attempts", err)
		}
		if want := (middleware.Outcome{Attempts: 3, Reason: middleware.ReasonAttempts}); out != want || srv.Hits() != 3 {
			t.Errorf("Outcome %+v after %d hits; want %+v after 3", out, srv.Hits(), want)
		}
	})
}

// Hedging needs copies in flight side by side; backoff runs one operation
// at a time, so New refuses it with an *OptionError, before anything is
// sent, given to New or through the request's context.
func TestNoHedging(t *testing.T) {
	for _, viaContext := range []bool{false, true} {
		srv, hits := codeServer(t, 200)
		req := newRequest(t, http.MethodGet, srv.URL, "")
		opts := []middleware.Option{noWait, middleware.WithHedging(time.Millisecond, 1)}
		if viaContext {
			req = req.WithContext(middleware.WithRequestOptions(context.Background(), opts[1:]...))
			opts = opts[:1]
		}
		_, err := do(req, newTransport(t), opts...)
		var oe *middleware.OptionError
		if !errors.As(err, &oe) || oe.Option != "WithHedging" || hits.Load() != 0 {
			t.Errorf("context %v: err = %v after %d hits; want *OptionError for WithHedging, nothing sent", viaContext, err, hits.Load())
		}
	}
}
