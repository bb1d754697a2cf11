package middleware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestHooksAccumulate: each WithHooks call's hooks run after earlier ones,
// and the contexts they return chain: RequestStart's is every attempt's
// parent, AttemptStart's reaches AttemptEnd.
func TestHooksAccumulate(t *testing.T) {
	type key string
	var calls []string
	mk := func(name string) Hooks {
		return Hooks{
			RequestStart: func(ctx context.Context, _ *http.Request) context.Context {
				calls = append(calls, name+".RequestStart")
				return context.WithValue(ctx, key(name), "req")
			},
			AttemptStart: func(ctx context.Context, a *Attempt) context.Context {
				if ctx.Value(key("a")) != "req" {
					t.Errorf("%s.AttemptStart: RequestStart's context is not the parent", name)
				}
				calls = append(calls, name+".AttemptStart")
				return context.WithValue(ctx, key(name+"-attempt"), a.Number)
			},
			AttemptEnd: func(ctx context.Context, a *Attempt) {
				if ctx.Value(key("b-attempt")) != a.Number {
					t.Errorf("%s.AttemptEnd: AttemptStart's context lost", name)
				}
				calls = append(calls, name+".AttemptEnd")
			},
			RequestEnd: func(ctx context.Context, _ *Attempt) {
				if ctx.Value(key("b")) != "req" {
					t.Errorf("%s.RequestEnd: RequestStart's context lost", name)
				}
				calls = append(calls, name+".RequestEnd")
			},
		}
	}
	tr := NewTransport(&fakeRT{status: 200}, WithHooks(mk("a")), WithHooks(Hooks{}), WithHooks(mk("b")))
	req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
	if _, err := tr.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	want := []string{"a.RequestStart", "b.RequestStart", "a.AttemptStart", "b.AttemptStart",
		"a.AttemptEnd", "b.AttemptEnd", "a.RequestEnd", "b.RequestEnd"}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("hook calls (-want +got):\n%s", diff)
	}
}

// TestWithSchedule: a caller's schedule gives the waits, is built once per
// request, and ends retrying by returning false.
func TestWithSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		built := 0
		sched := WithSchedule(func() func(int) (time.Duration, bool) {
			built++
			return func(n int) (time.Duration, bool) {
				switch n {
				case 1:
					return -time.Second, true // negative: no wait
				case 2:
					return 3 * time.Second, true
				}
				return 0, false
			}
		})
		rt := &fakeRT{status: 503}
		var reasons []Reason
		tr := NewTransport(rt, sched, WithMaxAttempts(10),
			WithHooks(Hooks{AttemptEnd: func(_ context.Context, a *Attempt) { reasons = append(reasons, a.Reason) }}))
		for i := 0; i < 2; i++ {
			reasons = nil
			start := time.Now()
			req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil || resp.StatusCode != 503 {
				t.Fatalf("RoundTrip = %v, %v; want the 503", resp, err)
			}
			if el := time.Since(start); el != 3*time.Second {
				t.Errorf("took %v of fake time; want 3s (0, then 3s)", el)
			}
			want := []Reason{ReasonNotProcessed, ReasonNotProcessed, ReasonAttempts}
			if diff := cmp.Diff(want, reasons); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
		}
		if built != 2 || rt.calls != 6 {
			t.Errorf("schedule built %d times for %d attempts; want 2 (once per request) and 6", built, rt.calls)
		}
	})
}

// TestErrorMessages: every error names the package and what went wrong.
func TestErrorMessages(t *testing.T) {
	last := errors.New("read: connection reset by peer")
	for _, tt := range []struct {
		give error
		want string
	}{
		{&ExhaustedError{Attempts: 3, Reason: ReasonAttempts, Err: last},
			"tank: gave up after 3 attempts (attempts_exhausted): read: connection reset by peer"},
		{&ExhaustedError{Attempts: 1, Reason: ReasonCanceled, cause: errors.New("shutdown")},
			"tank: gave up after 1 attempt (canceled): shutdown"},
		{&BodyError{Err: errors.New("gone")}, "tank: request body cannot be replayed: gone"},
		{&OptionError{"WithMaxAttempts", 0, "must be at least 1"}, "tank: WithMaxAttempts(0): must be at least 1"},
		{ReasonBudget, "budget_exhausted"},
	} {
		if got := tt.give.Error(); got != tt.want {
			t.Errorf("Error() = %q; want %q", got, tt.want)
		}
	}
	e := &ExhaustedError{Attempts: 2, Reason: ReasonCanceled, Err: last, cause: context.Canceled}
	if !errors.Is(e, last) || !errors.Is(e, ReasonCanceled) || !errors.Is(e, context.Canceled) {
		t.Error("ExhaustedError does not unwrap to its last error, reason and cause")
	}
	// Labels print as themselves, with %s, %v and in log/slog records.
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "reason", ReasonNotProcessed, "class", ClassThrottled)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "reason", ReasonNotProcessed, "class", ClassThrottled)
	for _, want := range []string{`"reason":"not_processed","class":"throttled"`, `reason=not_processed class=throttled`} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("slog records %q; want them to contain %q", logged.String(), want)
		}
	}
	if got := fmt.Sprintf("%s %v %s %v", ReasonNotProcessed, ReasonDeadline, ClassReset, ClassThrottled); got != "not_processed deadline reset throttled" {
		t.Errorf("Sprintf of labels = %q; want %q", got, "not_processed deadline reset throttled")
	}
	for _, v := range []Verdict{Pass, Retry, Stop} {
		if s := v.String(); s == "" || strings.Contains(s, "(") {
			t.Errorf("Verdict(%d).String() = %q", v, s)
		}
	}
}
