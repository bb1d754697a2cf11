package middleware

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInvalidOptions: every invalid value gives an *OptionError naming the
// option, never a panic.
func TestInvalidOptions(t *testing.T) {
	for _, tt := range []struct {
		opt  Option
		name string
	}{
		{WithMaxAttempts(0), "WithMaxAttempts"},
		{WithMaxAttempts(-1), "WithMaxAttempts"},
		{WithGroupAttempts(-1, 0, 0), "WithGroupAttempts"},
		{WithGroupAttempts(0, -1, 0), "WithGroupAttempts"},
		{WithGroupAttempts(0, 0, -1), "WithGroupAttempts"},
		{WithBackoff(-time.Second, time.Second), "WithBackoff"},
		{WithBackoff(0, -time.Second), "WithBackoff"},
		{WithBackoff(2*time.Second, time.Second), "WithBackoff"},
		{WithJitter(JitterNone + 1), "WithJitter"},
		{WithSchedule(nil), "WithSchedule"},
		{WithRetryAfterCap(-1), "WithRetryAfterCap"},
		{WithAttemptTimeout(-1), "WithAttemptTimeout"},
		{WithReplayableMethods("GET", ""), "WithReplayableMethods"},
		{WithStatuses([]int{99}, nil), "WithStatuses"},
		{WithStatuses([]int{600}, nil), "WithStatuses"},
		{WithStatuses(nil, []int{-5}), "WithStatuses"},
		{WithStatuses([]int{503}, []int{503}), "WithStatuses"},
		{WithClassifier(nil), "WithClassifier"},
		{WithBufferLimit(-1), "WithBufferLimit"},
		{WithDrainLimit(-1), "WithDrainLimit"},
		{WithAttemptHeader("X Bad"), "WithAttemptHeader"},
		{WithAttemptHeader("X-Ünicode"), "WithAttemptHeader"},
		{WithAttemptHeader("X:Attempt"), "WithAttemptHeader"},
	} {
		p, err := newPolicy(tt.opt)
		var oe *OptionError
		if p != nil || !errors.As(err, &oe) || oe.Option != tt.name {
			t.Errorf("newPolicy(%s) = %v, %v; want nil, *OptionError for %s", tt.name, p, err, tt.name)
		}
	}
}

// TestValidOptionsAndLastWins: valid edge values are accepted, nil options
// are skipped, and for a setting given twice the last wins.
func TestValidOptionsAndLastWins(t *testing.T) {
	p, err := newPolicy(nil, WithMaxAttempts(1), WithMaxAttempts(7), WithBackoff(0, 0), WithRetryAfterCap(0),
		WithAttemptTimeout(0), WithBufferLimit(0), WithDrainLimit(0), WithGroupAttempts(0, 0, 0),
		WithStatuses(nil, nil), WithReplayableMethods(), WithAttemptHeader(""), WithJitter(JitterDecorrelated))
	if err != nil {
		t.Fatalf("newPolicy = %v", err)
	}
	if p.maxAttempts != 7 || p.jitter != JitterDecorrelated {
		t.Errorf("maxAttempts %d, jitter %d; want 7 (last wins), decorrelated", p.maxAttempts, p.jitter)
	}
	if p.statusClass(503) != ClassFinal || p.replayable(&httpRequestGET) {
		t.Error("WithStatuses(nil, nil) / WithReplayableMethods() did not empty the sets")
	}
}

var httpRequestGET = func() http.Request { return http.Request{Method: http.MethodGet, Header: http.Header{}} }()

// TestAttemptHeaderAcceptsTokens: any RFC 9110 token is a valid header name.
func TestAttemptHeaderAcceptsTokens(t *testing.T) {
	for _, name := range []string{"X-Attempt", "x_attempt", "X.Retry~Count", "a!#$%&'*+-.^_`|~9"} {
		if _, err := newPolicy(WithAttemptHeader(name)); err != nil {
			t.Errorf("WithAttemptHeader(%q) = %v; want accepted", name, err)
		}
	}
}

// TestWaitOptionsIgnoreOrder: the wait options mean the same in any order,
// and a schedule given with a backoff is an error either way, never a
// silent choice of one.
func TestWaitOptionsIgnoreOrder(t *testing.T) {
	sched := WithSchedule(func() func(int) (time.Duration, bool) {
		return func(int) (time.Duration, bool) { return 40 * time.Millisecond, true }
	})
	backoff, jitter := WithBackoff(time.Millisecond, time.Second), WithJitter(JitterNone)
	for _, opts := range [][]Option{{sched, backoff}, {backoff, sched}, {sched, jitter}, {jitter, sched}} {
		var oe *OptionError
		if _, err := newPolicy(opts...); !errors.As(err, &oe) || oe.Option != "WithSchedule" {
			t.Errorf("schedule with a backoff option: error %v; want the *OptionError of WithSchedule", err)
		}
	}
	a, _ := newPolicy(backoff, jitter)
	b, _ := newPolicy(jitter, backoff)
	if a.initial != b.initial || a.maxWait != b.maxWait || a.jitter != b.jitter || a.jitter != JitterNone {
		t.Errorf("WithBackoff and WithJitter depend on their order: %v/%v/%v against %v/%v/%v", a.initial, a.maxWait, a.jitter, b.initial, b.maxWait, b.jitter)
	}
}

func TestAttemptHeaderOnRetriesOnly(t *testing.T) {
	var seen []string
	rt := rtFunc(func(req *http.Request) (*http.Response, error) {
		seen = append(seen, req.Header.Get("X-Attempt"))
		return &http.Response{StatusCode: 503, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
	})
	req := httptest.NewRequest("GET", "http://api.test/", nil)
	resp, err := NewTransport(rt, WithAttemptHeader("X-Attempt"), WithBackoff(0, 0)).RoundTrip(req)
	if err != nil || resp.StatusCode != 503 {
		t.Fatal(resp, err)
	}
	if got := len(seen); got != 3 || seen[0] != "" || seen[1] != "2" || seen[2] != "3" {
		t.Errorf("attempt headers %q; want [\"\" \"2\" \"3\"]", seen)
	}
	if req.Header.Get("X-Attempt") != "" {
		t.Error("the caller's request gained the attempt header")
	}
	if _, err := newPolicy(WithAttemptHeader("bad header")); err == nil {
		t.Error("WithAttemptHeader(\"bad header\") accepted")
	}
}

func TestIdempotencyKeysMakePostReplayable(t *testing.T) {
	var keys []string
	rt := rtFunc(func(req *http.Request) (*http.Response, error) {
		keys = append(keys, req.Header.Get("Idempotency-Key"))
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	})
	req := httptest.NewRequest("POST", "http://api.test/", strings.NewReader("pay"))
	tr := NewTransport(rt, WithIdempotencyKeys(true), WithBackoff(0, 0))
	if _, err := tr.RoundTrip(req); !errors.Is(err, ReasonAttempts) {
		t.Fatalf("err = %v; want attempts exhausted after retries", err)
	}
	if len(keys) != 3 || keys[0] == "" || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Errorf("keys %q; want one generated key on all 3 attempts", keys)
	}
	if req.Header.Get("Idempotency-Key") != "" {
		t.Error("the caller's request gained the key")
	}
}
