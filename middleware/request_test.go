package middleware

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// TestRequestOptions: a request's own options override the Transport's,
// raising the cap as well as lowering it, and apply to that request only.
func TestRequestOptions(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []Option
		want int // attempts against a server that always answers 503
	}{
		{"none", nil, 3},
		{"no retries for a health check", []Option{WithMaxAttempts(1)}, 1},
		{"more for an import", []Option{WithMaxAttempts(5)}, 5},
		{"404 retryable on this call", []Option{WithMaxAttempts(4), WithStatuses([]int{404}, nil)}, 4},
	} {
		rt := &silentRT{answer: func(int) (*http.Response, error) { return &http.Response{StatusCode: 503}, nil }}
		if strings.HasPrefix(tt.name, "404") {
			rt.answer = func(int) (*http.Response, error) { return &http.Response{StatusCode: 404}, nil }
		}
		tr := NewTransport(rt, WithBackoff(0, 0))
		ctx := context.Background()
		if tt.opts != nil {
			ctx = WithRequestOptions(ctx, tt.opts...)
		}
		req := newReq(t, http.MethodGet, "http://api.test/", "").WithContext(ctx)
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		if rt.calls != tt.want {
			t.Errorf("%s: %d attempts; want %d", tt.name, rt.calls, tt.want)
		}
		// The next request without options is back to the Transport's.
		rt.calls = 0
		tr.RoundTrip(newReq(t, http.MethodGet, "http://api.test/", ""))
		if rt.calls != 3 && !strings.HasPrefix(tt.name, "404") {
			t.Errorf("%s: the next request made %d attempts; want the Transport's 3", tt.name, rt.calls)
		}
	}
}

// TestRequestOptionsLayer: request options come after the Transport's, a
// later call after an earlier one, and hooks add up.
func TestRequestOptionsLayer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &fakeRT{status: 503}
		var calls []string
		h := func(name string) Hooks {
			return Hooks{RequestEnd: func(context.Context, *Attempt) { calls = append(calls, name) }}
		}
		tr := NewTransport(rt, WithBackoff(time.Second, time.Second), WithJitter(JitterNone), WithHooks(h("transport")))
		ctx := WithRequestOptions(context.Background(), WithMaxAttempts(2), WithHooks(h("first")))
		ctx = WithRequestOptions(ctx, WithBackoff(3*time.Second, 3*time.Second), WithHooks(h("second")))
		start := time.Now()
		resp, err := tr.RoundTrip(newReq(t, http.MethodGet, "http://api.test/", "").WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if el := time.Since(start); rt.calls != 2 || el != 3*time.Second {
			t.Errorf("%d attempts in %v; want 2 (first call) with a 3s wait (second call, over the Transport's 1s)", rt.calls, el)
		}
		if want := "transport first second"; strings.Join(calls, " ") != want {
			t.Errorf("RequestEnd hooks ran %q; want %q", calls, want)
		}
	})
}

// TestRequestOptionsInvalid: an invalid request option fails the request
// before anything is sent, with the *OptionError, the body closed.
func TestRequestOptionsInvalid(t *testing.T) {
	rt := &silentRT{answer: func(int) (*http.Response, error) { return &http.Response{StatusCode: 200}, nil }}
	body := &closeCounter{Reader: strings.NewReader("x")}
	req := newReq(t, http.MethodPost, "http://api.test/", "")
	req.Body = body
	req = req.WithContext(WithRequestOptions(context.Background(), WithMaxAttempts(0)))
	_, err := NewTransport(rt).RoundTrip(req)
	var oe *OptionError
	if !errors.As(err, &oe) || oe.Option != "WithMaxAttempts" || rt.calls != 0 || body.closes.Load() != 1 {
		t.Errorf("RoundTrip error %v after %d attempts, body closed %d times; want WithMaxAttempts' *OptionError, 0, 1", err, rt.calls, body.closes.Load())
	}
}

// TestOutcome: the caller learns how many attempts a request took and why
// it ended, without hooks, on the success path and after retries.
func TestOutcome(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			answer func(n int) (*http.Response, error)
			method string
			want   Outcome
		}{
			{"first try", func(int) (*http.Response, error) { return &http.Response{StatusCode: 200}, nil }, http.MethodGet,
				Outcome{1, ReasonFinal, 0}},
			{"after two 503s", func(n int) (*http.Response, error) {
				if n < 3 {
					return &http.Response{StatusCode: 503}, nil
				}
				return &http.Response{StatusCode: 200}, nil
			}, http.MethodGet, Outcome{3, ReasonFinal, 2 * time.Second}},
			{"POST reset", func(int) (*http.Response, error) { return nil, syscall.ECONNRESET }, http.MethodPost,
				Outcome{1, ReasonNotReplayable, 0}},
		} {
			rt := &silentRT{answer: tt.answer}
			tr := NewTransport(rt, WithBackoff(time.Second, time.Second), WithJitter(JitterNone))
			var out Outcome
			req := newReq(t, tt.method, "http://api.test/", "").WithContext(WithOutcome(context.Background(), &out))
			if resp, _ := tr.RoundTrip(req); resp != nil {
				resp.Body.Close()
			}
			if out != tt.want {
				t.Errorf("%s: Outcome = %+v; want %+v", tt.name, out, tt.want)
			}
		}
	})
}

// TestOutcomeWithRequestOptions: the two settings share a context.
func TestOutcomeWithRequestOptions(t *testing.T) {
	rt := &silentRT{answer: func(int) (*http.Response, error) { return &http.Response{StatusCode: 503}, nil }}
	var out Outcome
	ctx := WithOutcome(context.Background(), &out)
	ctx = WithRequestOptions(ctx, WithMaxAttempts(2))
	resp, _ := NewTransport(rt, WithBackoff(0, 0)).RoundTrip(newReq(t, http.MethodGet, "http://api.test/", "").WithContext(ctx))
	resp.Body.Close()
	if out.Attempts != 2 || out.Reason != ReasonAttempts {
		t.Errorf("Outcome = %+v; want 2 attempts, %s", out, ReasonAttempts)
	}
}
