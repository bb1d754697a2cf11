package middleware

import (
	"errors"
	"net/http"
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
		p, err := NewPolicy(tt.opt)
		var oe *OptionError
		if p != nil || !errors.As(err, &oe) || oe.Option != tt.name {
			t.Errorf("NewPolicy(%s) = %v, %v; want nil, *OptionError for %s", tt.name, p, err, tt.name)
		}
	}
}

// TestValidOptionsAndLastWins: valid edge values are accepted, nil options
// are skipped, and for a setting given twice the last wins.
func TestValidOptionsAndLastWins(t *testing.T) {
	p, err := NewPolicy(nil, WithMaxAttempts(1), WithMaxAttempts(7), WithBackoff(0, 0), WithRetryAfterCap(0),
		WithAttemptTimeout(0), WithBufferLimit(0), WithDrainLimit(0), WithGroupAttempts(0, 0, 0),
		WithStatuses(nil, nil), WithReplayableMethods(), WithAttemptHeader(""), WithJitter(JitterDecorrelated))
	if err != nil {
		t.Fatalf("NewPolicy = %v", err)
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
		if _, err := NewPolicy(WithAttemptHeader(name)); err != nil {
			t.Errorf("WithAttemptHeader(%q) = %v; want accepted", name, err)
		}
	}
}
